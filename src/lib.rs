//! mawqif: who is claiming what, sentence by sentence, in Arabic news.
//!
//! The pipeline, one folder per stage, each depending only on those above
//! it in this list (ARCHITECTURE.md draws it):
//!
//! 1. [`text`]: source text → units with byte spans ([`Segmenter`]), and
//!    each unit's text prepared for the encoder ([`text::Preprocessor`])
//! 2. [`tokenize`]: strings → token ids ([`tokenize::SentenceTokenizer`])
//! 3. [`model`] (with [`hub`]): which encoder, where its files are, its weights
//! 4. [`encode`]: token ids → pooled vectors ([`Embedder`], engines behind one trait)
//! 5. [`head`]: vectors (+ cue features) → [`Scores`] over the [`Label`]s
//! 6. [`report`]: labelled units → JSONL / TSV / table
//!
//! [`Classifier`] ties stages 1–5 together and [`classify_text`] runs them
//! all; [`eval`] scores predictions against gold and [`train`] makes heads;
//! [`serve`] puts a classifier behind HTTP with dynamic batching (the only
//! module with an async runtime).
#![deny(unsafe_code)]

pub mod archive;
pub mod classifier;
pub mod encode;
pub mod error;
pub mod eval;
pub mod files;
pub mod head;
pub mod hub;
pub mod label;
pub mod model;
pub mod report;
pub mod rng;
pub mod serve;
pub mod text;
pub mod tokenize;
pub mod train;

pub use classifier::{
    classify_segments, classify_text, find_default_head, Classification, Classifier, LoadOptions,
    UnitSizes,
};
pub use encode::{Embedder, Engine, RunOptions};
pub use error::{MawqifError, Result};
pub use head::Head;
pub use label::{Label, LabelMap, LabelSet, Scores, Stance};
pub use report::LabelledUnit;
pub use text::{Segment, Segmenter};

/// The local model that `scripts/fetch-local-model.sh` makes, relative to
/// the repository root: the CLI's default `--model`.
pub const DEFAULT_MODEL_DIR: &str = "models/multilingual-e5-small";

/// The bundled training data, relative to the repository root: what the
/// CLI trains a head on for an encoder without one.
pub const DEFAULT_TRAIN_DATA: &str = "eval/train/gold";
