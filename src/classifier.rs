//! Stages 2–5 behind one value: a neural model (encoder + head) or a
//! baseline, and the whole pipeline from source text to labelled units.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::encode::{Embedder, Engine, RunOptions};
use crate::error::{MawqifError, Result};
use crate::head::features::previous_units;
use crate::head::{cues, default_head_dir, features, Head};
use crate::hub::snapshot_identity;
use crate::label::{LabelSet, Scores};
use crate::model::{ModelDir, ModelProfile};
use crate::report::LabelledUnit;
use crate::text::{Segment, Segmenter};

/// How to load a neural classifier: given as values, never read from the
/// environment or the working directory by the library.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub engine: Engine,
    /// The folder whose `heads/<name>/` holds the heads shipped for hub
    /// models (the repository's `models/`).
    pub models_root: PathBuf,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            engine: Engine::auto(),
            models_root: PathBuf::from("models"),
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

/// How long each unit is, for sizing batches: tokens before truncation for
/// a neural model, words (plus two, like `[CLS]` and `[SEP]`) for a baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSizes {
    pub tokens: Vec<usize>,
    /// The encoder's limit per unit; longer units are truncated to it.
    /// `None` for a baseline, which reads any length.
    pub limit: Option<usize>,
}

impl UnitSizes {
    /// What unit `i` costs in a batch: its length, capped at the limit.
    pub fn cost(&self, i: usize) -> usize {
        let n = self.tokens.get(i).copied().unwrap_or(0);
        self.limit.map_or(n, |l| n.min(l))
    }
}

/// The neural model or a baseline.
pub enum Classifier {
    Neural {
        embedder: Box<Embedder>,
        head: Box<Head>,
    },
    /// The transparent rule baseline of [`cues`].
    Cues,
    /// Always the same scores (all mass on the majority class of some gold set).
    Constant(Scores),
}

impl Classifier {
    /// Load a model directory and its head (explicit, or the default place).
    pub fn load_neural(
        model_dir: &Path,
        head_dir: Option<&Path>,
        options: &LoadOptions,
    ) -> Result<Self> {
        let dir = ModelDir::open(model_dir)?;
        let head_dir = match head_dir {
            Some(h) => h.to_path_buf(),
            None => find_default_head(model_dir, &dir.profile, &options.models_root)?,
        };
        Self::with_head(&dir, &head_dir, options.engine)
    }

    /// The encoder of `dir` (with the head's fine-tuned layers, if any) and the head.
    pub fn with_head(dir: &ModelDir, head_dir: &Path, engine: Engine) -> Result<Self> {
        let head = Head::load(head_dir)?;
        let override_file = head
            .spec
            .encoder_override
            .as_ref()
            .map(|f| head_dir.join(f));
        let embedder = Embedder::load(dir, override_file.as_deref(), engine)?;
        head.check_encoder(head_dir, embedder.dim(), embedder.profile.pooling)?;
        Ok(Classifier::Neural {
            embedder: Box::new(embedder),
            head: Box::new(head),
        })
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
            Classifier::Constant(s) => format!("constant:{}", s.best()),
        }
    }

    /// The labels this classifier predicts, in score order: the head's own
    /// set, or the stance scheme of the cue rules.
    pub fn labels(&self) -> LabelSet {
        match self {
            Classifier::Neural { head, .. } => head.spec.labels.clone(),
            Classifier::Cues => LabelSet::stance(),
            Classifier::Constant(s) => s.labels().clone(),
        }
    }

    /// Refuse what [`Classifier::classify`] would refuse for `texts` (a
    /// sentence far over the encoder's limit), without classifying; the
    /// warnings it would give (truncated sentences).
    pub fn check(&self, texts: &[&str], options: &RunOptions) -> Result<Vec<String>> {
        match self {
            Classifier::Neural { embedder, .. } => embedder.check(texts, options),
            Classifier::Cues | Classifier::Constant(_) => Ok(Vec::new()),
        }
    }

    /// Sizes of `texts` for batching; see [`UnitSizes`].
    pub fn unit_sizes(&self, texts: &[&str]) -> Result<UnitSizes> {
        match self {
            Classifier::Neural { embedder, .. } => Ok(UnitSizes {
                tokens: embedder.token_counts(texts)?,
                limit: Some(embedder.max_tokens()),
            }),
            Classifier::Cues | Classifier::Constant(_) => Ok(UnitSizes {
                tokens: texts
                    .iter()
                    .map(|t| t.split_whitespace().count() + 2)
                    .collect(),
                limit: None,
            }),
        }
    }

    /// Scores of `texts`, read as consecutive units of one text (a head
    /// with context features sees each unit's predecessor).
    pub fn classify(
        &self,
        texts: &[&str],
        options: &RunOptions,
        on_batch: impl FnMut(usize),
    ) -> Result<Classification> {
        self.classify_units(texts, &previous_units(texts), options, on_batch)
    }

    /// Scores of `texts`, where `previous[i]` is the unit before `texts[i]`
    /// in its own text (None for a first unit).
    pub fn classify_units(
        &self,
        texts: &[&str],
        previous: &[Option<&str>],
        options: &RunOptions,
        on_batch: impl FnMut(usize),
    ) -> Result<Classification> {
        match self {
            Classifier::Neural { embedder, head } => {
                let (vectors, mut warnings) = embedder.embed(texts, options, on_batch)?;
                let previous_vectors = if head.spec.features.context_embedding {
                    let (found, extra_warnings) =
                        previous_vectors(embedder, texts, &vectors, previous, options)?;
                    warnings.extend(extra_warnings);
                    found
                } else {
                    vec![None; texts.len()]
                };
                let scores = vectors
                    .iter()
                    .zip(texts)
                    .enumerate()
                    .map(|(i, (v, t))| {
                        let pv = previous_vectors[i].as_deref();
                        let p = previous.get(i).copied().flatten();
                        head.predict(&features(v, t, p, pv, &head.spec.features))
                    })
                    .collect();
                Ok(Classification { scores, warnings })
            }
            Classifier::Cues => Ok(Classification {
                scores: texts.iter().map(|t| cues::cue_scores(t)).collect(),
                warnings: Vec::new(),
            }),
            Classifier::Constant(s) => Ok(Classification {
                scores: vec![s.clone(); texts.len()],
                warnings: Vec::new(),
            }),
        }
    }
}

/// Each unit's previous unit's vector (None for a first unit).
type PreviousVectors = Vec<Option<Vec<f32>>>;

/// The vector of each unit's previous unit: taken from `vectors` when that
/// unit is among `texts` (the usual case: a text's units come together),
/// else encoded here (a previous unit that fell in an earlier batch).
fn previous_vectors<'t>(
    embedder: &Embedder,
    texts: &[&'t str],
    vectors: &[Vec<f32>],
    previous: &[Option<&'t str>],
    options: &RunOptions,
) -> Result<(PreviousVectors, Vec<String>)> {
    let previous = |i: usize| previous.get(i).copied().flatten();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (i, t) in texts.iter().enumerate() {
        position.entry(t).or_insert(i);
    }
    let (mut missing, mut missing_index): (Vec<&str>, HashMap<&str, usize>) = Default::default();
    for p in (0..texts.len()).filter_map(previous) {
        if !position.contains_key(p) && !missing_index.contains_key(p) {
            missing_index.insert(p, missing.len());
            missing.push(p);
        }
    }
    let (extra, warnings) = if missing.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        embedder.embed(&missing, options, |_| {})?
    };
    let found = (0..texts.len())
        .map(|i| {
            let p = previous(i)?;
            match position.get(p) {
                Some(&j) => vectors.get(j).cloned(),
                None => missing_index.get(p).and_then(|&k| extra.get(k).cloned()),
            }
        })
        .collect();
    Ok((found, warnings))
}

/// The head that goes with a model when none is given: `<model>/head/`,
/// else `heads/<model name>/` beside the model directory, or under
/// `models_root` for hub snapshots (which live in the shared cache).
pub fn find_default_head(
    model_dir: &Path,
    profile: &ModelProfile,
    models_root: &Path,
) -> Result<PathBuf> {
    let inside = model_dir.join("head");
    if inside.join("head.json").is_file() {
        return Ok(inside);
    }
    let root = if snapshot_identity(model_dir).is_some() {
        models_root
    } else {
        model_dir.parent().unwrap_or(Path::new("."))
    };
    let shipped = default_head_dir(root, &profile.id);
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
    segments: &[Segment],
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A server shares one classifier between request handlers and its
    /// batching thread.
    #[test]
    fn classifiers_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Classifier>();
    }
}
