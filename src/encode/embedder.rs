//! Stages 2–4 behind one value: preprocess, tokenize and encode sentences.

use std::path::{Path, PathBuf};

use crate::error::{MawqifError, Result};
use crate::model::{ModelDir, ModelProfile};
use crate::text::Preprocessor;
use crate::tokenize::SentenceTokenizer;

use super::{Encoder, Engine};

/// Sentences longer than this many times the model's limit are refused
/// rather than truncated: they are unsegmented text, not sentences.
pub const OVERLONG_FACTOR: usize = 4;

/// Options of one embedding or classification run.
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

/// Text → pooled vectors.
pub struct Embedder {
    pub profile: ModelProfile,
    pub model_dir: PathBuf,
    preprocessor: Preprocessor,
    tokenizer: SentenceTokenizer,
    encoder: Encoder,
}

impl Embedder {
    /// Open the model directory at `path` and load it for `engine`.
    pub fn open(path: &Path, engine: Engine) -> Result<Self> {
        Self::load(&ModelDir::open(path)?, None, engine)
    }

    /// Load an opened model directory for `engine`, with the tensors of
    /// `override_file` (fine-tuned layers) in place of the base model's
    /// tensors of the same name.
    pub fn load(dir: &ModelDir, override_file: Option<&Path>, engine: Engine) -> Result<Self> {
        let tokenizer = SentenceTokenizer::from_model_dir(
            &dir.path,
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
        let encoder = Encoder::load(dir, tokenizer.pad_id(), override_file, engine)?;
        Ok(Self {
            preprocessor: Preprocessor::new(dir.profile.preprocessing, dir.profile.prefix.clone()),
            profile: dir.profile.clone(),
            model_dir: dir.path.clone(),
            tokenizer,
            encoder,
        })
    }

    pub fn dim(&self) -> usize {
        self.encoder.hidden_size()
    }

    pub fn engine(&self) -> Engine {
        self.encoder.engine()
    }

    /// What runs the encoder's matrix products: `amx`, `avx512-bf16`,
    /// `f32` (joined by `+` when layers differ), or `candle`.
    pub fn product_kernel(&self) -> String {
        self.encoder.product_kernel()
    }

    pub fn tokenizer(&self) -> &SentenceTokenizer {
        &self.tokenizer
    }

    /// The most tokens the encoder reads of one sentence (longer ones are truncated).
    pub fn max_tokens(&self) -> usize {
        self.tokenizer.max_length()
    }

    /// The string the tokenizer is given for `text` (prefix and preprocessing
    /// applied): what decides its vector.
    pub fn encoder_input(&self, text: &str) -> String {
        self.preprocessor.apply(text)
    }

    /// How many tokens each text has before truncation, tokenized exactly
    /// as [`Embedder::embed`] would: what a batcher sizes its batches by.
    pub fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>> {
        let inputs: Vec<String> = texts.iter().map(|t| self.encoder_input(t)).collect();
        Ok(self
            .tokenizer
            .encode(&inputs)?
            .iter()
            .map(|t| t.untruncated_len)
            .collect())
    }

    /// Pooled vectors for `texts`; warnings name truncated sentences.
    pub fn embed(
        &self,
        texts: &[&str],
        options: &RunOptions,
        on_batch: impl FnMut(usize),
    ) -> Result<(Vec<Vec<f32>>, Vec<String>)> {
        let (tokenized, warnings) = self.tokenize(texts, options)?;
        let vectors = self
            .encoder
            .embed(&tokenized, options.batch_size, on_batch)?;
        Ok((vectors, warnings))
    }

    /// Refuse what `embed` would refuse (a sentence far over the model's
    /// length limit), without encoding anything; the warnings `embed` would give.
    pub fn check(&self, texts: &[&str], options: &RunOptions) -> Result<Vec<String>> {
        self.tokenize(texts, options).map(|(_, warnings)| warnings)
    }

    fn tokenize(
        &self,
        texts: &[&str],
        options: &RunOptions,
    ) -> Result<(Vec<crate::tokenize::TokenizedSentence>, Vec<String>)> {
        let inputs: Vec<String> = texts.iter().map(|t| self.encoder_input(t)).collect();
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
        Ok((tokenized, warnings))
    }
}
