//! How mawqif feeds and pools an encoder: the settings beyond the Hugging
//! Face files (`mawqif.json` in a model directory, or the registry's entry
//! for a hub model).

use serde::{Deserialize, Serialize};

use crate::text::Preprocessing;

/// How sentence vectors are pooled from the encoder's token states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over real tokens (attention mask), as e5 and sentence-transformers do.
    #[default]
    Mean,
    /// The first token's state, as BERT classifiers do.
    Cls,
}

/// What mawqif needs to know about an encoder beyond the HF files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// Hub id (or a local name) of the encoder; heads record it.
    pub id: String,
    #[serde(default = "default_revision")]
    pub revision: String,
    #[serde(default)]
    pub pooling: Pooling,
    #[serde(default)]
    pub preprocessing: Preprocessing,
    /// Prepended to every sentence (e5 wants `query: `).
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Scale pooled vectors to unit length (e5 was trained that way).
    #[serde(default)]
    pub normalize: bool,
}

fn default_revision() -> String {
    "local".into()
}

fn default_max_length() -> usize {
    512
}

pub const PROFILE_FILE: &str = "mawqif.json";

impl ModelProfile {
    /// The profile of an encoder mawqif knows nothing about: mean pooling,
    /// no preprocessing, no prefix, the model's own length limit (at most 512).
    pub fn plain(id: String, revision: String, max_positions: usize) -> Self {
        ModelProfile {
            id,
            revision,
            pooling: Pooling::default(),
            preprocessing: Preprocessing::default(),
            prefix: String::new(),
            max_length: max_positions.min(512),
            normalize: false,
        }
    }

    /// The revision recorded for a local directory without one.
    pub fn local_revision() -> String {
        default_revision()
    }
}
