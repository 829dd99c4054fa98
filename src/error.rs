//! Typed errors of the library. The binary wraps them in `anyhow` at the edge.

use std::path::PathBuf;

/// Everything that can go wrong in the pipeline, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum MawqifError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is empty: give a UTF-8 text file with at least one sentence")]
    EmptyInput { path: PathBuf },

    #[error("{path} looks like a binary file (NUL byte at offset {offset}), not UTF-8 text")]
    BinaryInput { path: PathBuf, offset: usize },

    #[error(
        "{path} is not valid UTF-8 (first bad byte at offset {offset}); \
         convert it first, e.g. `iconv -f CP1256 -t UTF-8`"
    )]
    InvalidUtf8 { path: PathBuf, offset: usize },

    #[error("model directory {path} does not exist; run `bash scripts/fetch-local-model.sh` or pass --model DIR")]
    MissingModelDir { path: PathBuf },

    #[error("{path} is missing: {hint}")]
    MissingFile { path: PathBuf, hint: String },

    #[error("{path} is malformed: {reason}")]
    MalformedFile { path: PathBuf, reason: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error(
        "sentence {index} ({preview}…) has {tokens} tokens, more than {limit}: \
         this is not one sentence (is the text unsegmented?); split it or pass --allow-long to truncate"
    )]
    SentenceTooLong {
        index: usize,
        preview: String,
        tokens: usize,
        limit: usize,
    },

    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),

    #[error("head {path} does not fit the encoder: {reason}")]
    HeadMismatch { path: PathBuf, reason: String },

    #[error("{path}:{line}: {reason}")]
    BadRecord {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("bad label name {0:?}: a label is a non-empty name without spaces, `,` or `=`")]
    UnknownLabel(String),

    #[error("bad label set: {0}")]
    BadLabelSet(String),

    #[error(
        "bad --map: {0} (write FROM=TO pairs separated by commas, e.g. report=OBJ,opinion=SUBJ)"
    )]
    BadLabelMap(String),

    #[error("unknown engine `{0}`: use auto, bf16, f32 or candle")]
    UnknownEngine(String),

    #[error("bf16 precision needs a CPU with AVX-512 BF16; use f32")]
    Bf16Unsupported,

    #[error("{0}")]
    ShapeMismatch(String),

    #[error("a sequence of {tokens} tokens exceeds the model's {positions} positions")]
    SequenceTooLong { tokens: usize, positions: usize },

    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfVocab { id: usize, vocab: usize },

    #[error("no training sentences")]
    NoTrainingData,

    #[error("cannot average these runs: {0}")]
    RunsNotAveragable(String),

    #[error("feature rows must have length {expected}, found {found}")]
    FeatureLength { expected: usize, found: usize },

    #[error("{path} holds no *.jsonl gold files")]
    NoGoldFiles { path: PathBuf },

    #[error("{path}: no prediction matches any gold sentence (by {by}): is it for another text?")]
    NoMatchingPredictions { path: PathBuf, by: &'static str },

    #[error("gold sentence {id} is not at bytes {start}..{end} of the source text: wrong --text?")]
    GoldSpanMismatch {
        id: String,
        start: usize,
        end: usize,
    },

    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),

    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),

    #[error(
        "refusing to train on {path}: files under eval/fixtures/ are held-out evaluation data"
    )]
    EvalFixtureInTraining { path: PathBuf },
}

pub type Result<T, E = MawqifError> = std::result::Result<T, E>;

impl MawqifError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MawqifError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        MawqifError::MalformedFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl From<crate::files::WriteError> for MawqifError {
    fn from(e: crate::files::WriteError) -> Self {
        MawqifError::Io {
            path: e.path,
            source: e.source,
        }
    }
}
