//! mawqif: who is claiming what, sentence by sentence, in Arabic news.
//!
//! The pipeline has one module per stage, each a type with a small contract:
//!
//! 1. [`segment`]: source text → units with byte spans ([`segment::Segmenter`])
//! 2. [`preprocess`]: unit text → encoder input string ([`preprocess::Preprocessor`])
//! 3. [`tokenize`]: strings → token ids ([`tokenize::SentenceTokenizer`])
//! 4. [`encode`]: ids → pooled vectors ([`encode::Encoder`], candle BERT)
//! 5. [`classify`]: vectors → label probabilities ([`classify::Head`])
//! 6. [`report`]: labelled units → JSONL / TSV / table
//!
//! [`Classifier`] ties stages 2–5 together; [`classify_text`] runs them all.

pub mod classify;
pub mod cues;
pub mod e5s1;
pub mod encode;
pub mod error;
pub mod eval;
pub mod fastbert;
pub mod finetune;
pub mod hub;
pub mod input;
pub mod model_dir;
pub mod preprocess;
pub mod registry;
pub mod report;
pub mod scoreboard;
pub mod segment;
pub mod tokenize;
pub mod train;
pub mod unigram;
pub mod weights;

use std::path::{Path, PathBuf};

use classify::{Head, Label, Scores};
use encode::Encoder;
pub use error::{MawqifError, Result};
use model_dir::{ModelDir, ModelProfile};
use preprocess::Preprocessor;
use report::LabelledUnit;
use segment::Segmenter;
use tokenize::SentenceTokenizer;

/// Default model directory, relative to the working directory.
pub const DEFAULT_MODEL_DIR: &str = "models/multilingual-e5-small";

/// Sentences longer than this many times the model's limit are refused
/// rather than truncated: they are unsegmented text, not sentences.
pub const OVERLONG_FACTOR: usize = 4;

/// Training data used to train a head on first use for encoders without one.
pub const DEFAULT_TRAIN_DATA: &str = "eval/train/gold";

/// Options of a neural classification run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub batch_size: usize,
    /// Truncate any overlong unit instead of refusing the very long ones.
    pub allow_long: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            batch_size: 16,
            allow_long: false,
        }
    }
}

/// Result of classifying a list of sentences.
#[derive(Debug, Clone, Default)]
pub struct Classification {
    pub scores: Vec<Scores>,
    /// Things a user should know (truncated sentences), one line each.
    pub warnings: Vec<String>,
}

/// Encoder stages 2–4: text → pooled vectors.
pub struct Embedder {
    pub profile: ModelProfile,
    pub model_dir: PathBuf,
    preprocessor: Preprocessor,
    tokenizer: SentenceTokenizer,
    encoder: Encoder,
}

impl Embedder {
    pub fn load(model_dir: &Path) -> Result<Self> {
        Self::load_with_override(model_dir, None)
    }

    /// Load, with the tensors of `override_file` (fine-tuned layers) taking
    /// the place of the base model's tensors of the same name.
    pub fn load_with_override(model_dir: &Path, override_file: Option<&Path>) -> Result<Self> {
        Self::load_with_engine(model_dir, override_file, encode::default_engine())
    }

    /// Load with an explicit encoder engine (see [`encode::Engine`]).
    pub fn load_with_engine(
        model_dir: &Path,
        override_file: Option<&Path>,
        engine: encode::Engine,
    ) -> Result<Self> {
        let dir = ModelDir::open(model_dir)?;
        let tokenizer = SentenceTokenizer::from_model_dir(
            model_dir,
            Some(dir.pad_id()),
            dir.profile.max_length,
        )?;
        if tokenizer.vocab_size() > dir.config.vocab_size {
            return Err(MawqifError::malformed(
                tokenizer.source(),
                format!(
                    "tokenizer has {} tokens but config.json says vocab_size {}",
                    tokenizer.vocab_size(),
                    dir.config.vocab_size
                ),
            ));
        }
        let encoder = Encoder::load_with_engine(&dir, tokenizer.pad_id(), override_file, engine)?;
        Ok(Self {
            preprocessor: Preprocessor::new(dir.profile.preprocessing, dir.profile.prefix.clone()),
            profile: dir.profile,
            model_dir: dir.path,
            tokenizer,
            encoder,
        })
    }

    pub fn dim(&self) -> usize {
        self.encoder.hidden_size()
    }

    pub fn engine(&self) -> encode::Engine {
        self.encoder.engine()
    }

    pub fn tokenizer(&self) -> &SentenceTokenizer {
        &self.tokenizer
    }

    /// Pooled vectors for `texts`; warnings name truncated sentences.
    pub fn embed(
        &self,
        texts: &[&str],
        options: &RunOptions,
        on_batch: impl FnMut(usize),
    ) -> Result<(Vec<Vec<f32>>, Vec<String>)> {
        let inputs: Vec<String> = texts.iter().map(|t| self.preprocessor.apply(t)).collect();
        let tokenized = self.tokenizer.encode(&inputs)?;
        let limit = self.tokenizer.max_length();
        let mut warnings = Vec::new();
        for (k, t) in tokenized.iter().enumerate() {
            if !t.was_truncated() {
                continue;
            }
            let preview: String = texts[k].chars().take(40).collect();
            if !options.allow_long && t.untruncated_len > OVERLONG_FACTOR * limit {
                return Err(MawqifError::SentenceTooLong {
                    index: k,
                    preview,
                    tokens: t.untruncated_len,
                    limit: OVERLONG_FACTOR * limit,
                });
            }
            warnings.push(format!(
                "sentence {k} ({preview}…) has {} tokens; truncated to {limit}",
                t.untruncated_len
            ));
        }
        let vectors = self
            .encoder
            .embed(&tokenized, options.batch_size, on_batch)?;
        Ok((vectors, warnings))
    }
}

/// Stages 2–5 behind one interface: the neural model or a baseline.
pub enum Classifier {
    Neural {
        embedder: Box<Embedder>,
        head: Box<Head>,
    },
    /// The transparent rule baseline of [`cues`].
    Cues,
    /// Always the same label (the majority class of some gold set).
    Constant(Label),
}

impl Classifier {
    /// Load a model directory and its head (explicit, or the default place).
    pub fn load_neural(model_dir: &Path, head_dir: Option<&Path>) -> Result<Self> {
        let profile = ModelDir::open(model_dir)?.profile;
        let head_dir = match head_dir {
            Some(h) => h.to_path_buf(),
            None => find_default_head(model_dir, &profile)?,
        };
        Self::with_head(model_dir, &head_dir)
    }

    /// The encoder of `model_dir` (with the head's fine-tuned layers, if any) and the head.
    fn with_head(model_dir: &Path, head_dir: &Path) -> Result<Self> {
        let head = Head::load(head_dir)?;
        let override_file = head
            .spec
            .encoder_override
            .as_ref()
            .map(|f| head_dir.join(f));
        let embedder = Embedder::load_with_override(model_dir, override_file.as_deref())?;
        head.check_encoder(head_dir, embedder.dim(), embedder.profile.pooling)?;
        Ok(Classifier::Neural {
            embedder: Box::new(embedder),
            head: Box::new(head),
        })
    }

    /// Like [`Classifier::load_neural`], but when the model has no head
    /// anywhere, train the default head on `train_data` (gold JSONL files or
    /// directories) once and keep it in the cache ([`train::auto_head_dir`]).
    /// `notify` is told what is happening, since this takes a while.
    pub fn load_neural_or_train(
        model_dir: &Path,
        head_dir: Option<&Path>,
        train_data: &[PathBuf],
        batch_size: usize,
        mut notify: impl FnMut(&str),
    ) -> Result<Self> {
        // The profile is cheap to read; the encoder is loaded only to train.
        let profile = ModelDir::open(model_dir)?.profile;
        let found = match head_dir {
            Some(h) => Some(h.to_path_buf()),
            None => find_default_head(model_dir, &profile).ok(),
        };
        let auto_dir = train::auto_head_dir(&profile.id, &profile.revision);
        let head_dir = match found {
            Some(h) => h,
            None if auto_dir.join("head.json").is_file() => {
                notify(&format!(
                    "using the head trained earlier for {} in {}",
                    profile.id,
                    auto_dir.display()
                ));
                auto_dir
            }
            None if !train_data.is_empty() && train_data.iter().all(|p| p.exists()) => {
                let embedder = Embedder::load(model_dir)?;
                let examples = train::load_examples(train_data)?;
                notify(&format!(
                    "no classifier head for {}: training one on {} labelled sentences from {}; it will be kept in {}",
                    embedder.profile.id,
                    examples.len(),
                    train_data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                    auto_dir.display()
                ));
                let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
                let vectors =
                    train::embed_with_cache(&embedder, &texts, batch_size, |_, _| {}, |_| {})?;
                let spec = classify::FeatureSpec {
                    embedding_dim: embedder.dim(),
                    cues: true,
                };
                let rows: Vec<Vec<f32>> = vectors
                    .iter()
                    .zip(&texts)
                    .map(|(v, t)| train::features(v, t, &spec))
                    .collect();
                let labels: Vec<Label> = examples.iter().map(|e| e.label).collect();
                let options = train::TrainOptions::default();
                let mut head = train::train_head(
                    &rows,
                    &labels,
                    train::head_spec(
                        &embedder.profile.id,
                        &embedder.profile.revision,
                        embedder.profile.pooling,
                        spec,
                        options.kind,
                    ),
                    &options,
                )?;
                head.spec.training = serde_json::json!({
                    "data": train_data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                    "sentences": examples.len(),
                    "trained": "automatically on first use",
                });
                head.save(&auto_dir)?;
                auto_dir
            }
            None => find_default_head(model_dir, &profile)?,
        };
        Self::with_head(model_dir, &head_dir)
    }

    /// A short name for reports.
    pub fn name(&self) -> String {
        match self {
            Classifier::Neural { embedder, head } => {
                let mut n = embedder.profile.id.clone();
                if head.spec.hidden.is_some() {
                    n.push_str("+mlp");
                }
                n
            }
            Classifier::Cues => "cues".into(),
            Classifier::Constant(l) => format!("constant:{l}"),
        }
    }

    pub fn classify(
        &self,
        texts: &[&str],
        options: &RunOptions,
        on_batch: impl FnMut(usize),
    ) -> Result<Classification> {
        match self {
            Classifier::Neural { embedder, head } => {
                let (vectors, warnings) = embedder.embed(texts, options, on_batch)?;
                let scores = vectors
                    .iter()
                    .zip(texts)
                    .map(|(v, t)| head.predict(&train::features(v, t, &head.spec.features)))
                    .collect();
                Ok(Classification { scores, warnings })
            }
            Classifier::Cues => Ok(Classification {
                scores: texts.iter().map(|t| cues::cue_scores(t)).collect(),
                warnings: Vec::new(),
            }),
            Classifier::Constant(l) => Ok(Classification {
                scores: vec![Scores::certain(*l); texts.len()],
                warnings: Vec::new(),
            }),
        }
    }
}

/// The head that goes with a model when none is given: `<model>/head/`, else
/// `models/heads/<model name>/` beside the model directory.
pub fn find_default_head(model_dir: &Path, profile: &ModelProfile) -> Result<PathBuf> {
    let inside = model_dir.join("head");
    if inside.join("head.json").is_file() {
        return Ok(inside);
    }
    // Hub snapshots live in the shared cache; their shipped heads live in ./models.
    let root = if hub::snapshot_identity(model_dir).is_some() {
        Path::new("models")
    } else {
        model_dir.parent().unwrap_or(Path::new("."))
    };
    let shipped = classify::default_head_dir(root, &profile.id);
    if shipped.join("head.json").is_file() {
        return Ok(shipped);
    }
    Err(MawqifError::MissingFile {
        path: shipped,
        hint: format!(
            "no classifier head for {}; pass --head DIR or train one with `mawqif train --model {}`",
            profile.id,
            model_dir.display()
        ),
    })
}

/// Segment one text and label its units.
pub fn classify_text(
    file: &str,
    source: &str,
    classifier: &Classifier,
    options: &RunOptions,
    on_batch: impl FnMut(usize),
) -> Result<(Vec<LabelledUnit>, Vec<String>)> {
    let segments = Segmenter::new().segment(source);
    classify_segments(file, &segments, classifier, options, on_batch)
}

/// Label units that are already segmented.
pub fn classify_segments(
    file: &str,
    segments: &[segment::Segment],
    classifier: &Classifier,
    options: &RunOptions,
    on_batch: impl FnMut(usize),
) -> Result<(Vec<LabelledUnit>, Vec<String>)> {
    let texts: Vec<&str> = segments.iter().map(|s| s.text.as_str()).collect();
    let result = classifier.classify(&texts, options, on_batch)?;
    let units = segments
        .iter()
        .zip(result.scores)
        .map(|(s, sc)| LabelledUnit::new(file, s, sc))
        .collect();
    Ok((units, result.warnings))
}
