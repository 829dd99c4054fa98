//! The feature vector a head reads: the pooled encoder vector, then the
//! transparent cue features of [`super::cues`] when the head asks for them.

use serde::{Deserialize, Serialize};

use super::cues;

/// Which features a head reads, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Length of the pooled encoder vector.
    pub embedding_dim: usize,
    /// Whether the cue features of [`cues::cue_features`] follow it.
    #[serde(default)]
    pub cues: bool,
}

impl FeatureSpec {
    pub fn len(&self) -> usize {
        self.embedding_dim
            + if self.cues {
                cues::CUE_FEATURES.len()
            } else {
                0
            }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The feature vector a head reads: the pooled vector, then cue features if asked.
pub fn features(vector: &[f32], text: &str, spec: &FeatureSpec) -> Vec<f32> {
    let mut f = vector.to_vec();
    if spec.cues {
        f.extend(cues::cue_features(text));
    }
    f
}
