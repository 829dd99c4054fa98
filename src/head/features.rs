//! The feature vector a head reads: the pooled encoder vector, then the
//! transparent cue features of [`super::cues`] when the head asks for them,
//! then, with context, the cue features of the unit before it in the text
//! (a «وأضاف أن ...» sentence inherits its speaker from there).

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
    /// Whether the previous unit's cue features and a "first unit" flag follow.
    #[serde(default, skip_serializing_if = "is_false")]
    pub context: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Features of the previous unit: its cues, then 1 when there is none.
pub const CONTEXT_FEATURES: usize = cues::CUE_FEATURES.len() + 1;

impl FeatureSpec {
    pub fn len(&self) -> usize {
        self.embedding_dim
            + if self.cues {
                cues::CUE_FEATURES.len()
            } else {
                0
            }
            + if self.context { CONTEXT_FEATURES } else { 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The feature vector a head reads for `text`, whose previous unit in its
/// text is `previous` (None for the first).
pub fn features(
    vector: &[f32],
    text: &str,
    previous: Option<&str>,
    spec: &FeatureSpec,
) -> Vec<f32> {
    let mut f = vector.to_vec();
    if spec.cues {
        f.extend(cues::cue_features(text));
    }
    if spec.context {
        match previous {
            Some(p) => {
                f.extend(cues::cue_features(p));
                f.push(0.0);
            }
            None => {
                f.extend(std::iter::repeat_n(0.0, cues::CUE_FEATURES.len()));
                f.push(1.0);
            }
        }
    }
    f
}

/// The previous unit of each of `texts`, taken as consecutive units of one text.
pub fn previous_units<'a>(texts: &[&'a str]) -> Vec<Option<&'a str>> {
    (0..texts.len())
        .map(|i| i.checked_sub(1).map(|j| texts[j]))
        .collect()
}
