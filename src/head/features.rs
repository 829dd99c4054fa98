//! The feature vector a head reads: the pooled encoder vector, then the
//! transparent cue features of [`super::cues`] when the head asks for them,
//! then, with context, the cue features of the unit before it in the text
//! (a «وأضاف أن ...» sentence inherits its speaker from there), then, with
//! context embedding, that unit's pooled vector (a statement's body after
//! «قال X:» reads like narration on its own).

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
    /// Whether the previous unit's pooled vector and a "first unit" flag
    /// follow (the encoder vectors are computed anyway, so this costs no
    /// encoder time at inference).
    #[serde(default, skip_serializing_if = "is_false")]
    pub context_embedding: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Features of the previous unit: its cues, then 1 when there is none.
pub const CONTEXT_FEATURES: usize = cues::CUE_FEATURES.len() + 1;

impl FeatureSpec {
    /// The pooled vector alone: no cues, no context.
    pub fn plain(embedding_dim: usize) -> Self {
        Self {
            embedding_dim,
            cues: false,
            context: false,
            context_embedding: false,
        }
    }

    pub fn len(&self) -> usize {
        self.embedding_dim
            + if self.cues {
                cues::CUE_FEATURES.len()
            } else {
                0
            }
            + if self.context { CONTEXT_FEATURES } else { 0 }
            + if self.context_embedding {
                self.embedding_dim + 1
            } else {
                0
            }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The feature vector a head reads for `text` (pooled as `vector`), whose
/// previous unit in its text is `previous` (None for the first), pooled as
/// `previous_vector` (needed only by heads with `context_embedding`).
pub fn features(
    vector: &[f32],
    text: &str,
    previous: Option<&str>,
    previous_vector: Option<&[f32]>,
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
    if spec.context_embedding {
        f.extend(previous_vector_features(
            previous_vector,
            spec.embedding_dim,
        ));
    }
    f
}

/// The context-embedding part of a feature vector: the previous unit's
/// vector then 0, or zeros then 1 for a first unit.
pub fn previous_vector_features(previous_vector: Option<&[f32]>, dim: usize) -> Vec<f32> {
    let mut f = Vec::with_capacity(dim + 1);
    match previous_vector {
        Some(v) => {
            f.extend_from_slice(v);
            f.resize(dim, 0.0);
            f.push(0.0);
        }
        None => {
            f.resize(dim, 0.0);
            f.push(1.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_embedding_appends_the_previous_vector_and_a_first_unit_flag() {
        let spec = FeatureSpec {
            embedding_dim: 3,
            cues: false,
            context: false,
            context_embedding: true,
        };
        assert_eq!(spec.len(), 3 + 3 + 1);
        let with = features(
            &[1.0, 2.0, 3.0],
            "ب",
            Some("أ"),
            Some(&[4.0, 5.0, 6.0]),
            &spec,
        );
        assert_eq!(with, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0]);
        let first = features(&[1.0, 2.0, 3.0], "أ", None, None, &spec);
        assert_eq!(first, vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0]);
        let plain = FeatureSpec {
            context_embedding: false,
            ..spec
        };
        assert_eq!(
            features(
                &[1.0, 2.0, 3.0],
                "ب",
                Some("أ"),
                Some(&[4.0, 5.0, 6.0]),
                &plain
            ),
            vec![1.0, 2.0, 3.0]
        );
    }
}
