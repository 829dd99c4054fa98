//! Training classifier heads on labelled sentences.

use crate::classify::FeatureSpec;

/// The feature vector a head reads: the pooled vector, then cue features if asked.
pub fn features(vector: &[f32], text: &str, spec: &FeatureSpec) -> Vec<f32> {
    let mut f = vector.to_vec();
    if spec.cues {
        f.extend(crate::cues::cue_features(text));
    }
    f
}
