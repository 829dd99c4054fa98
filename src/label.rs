//! The labels of the scheme (`LABELS.md`) and a probability for each: the
//! vocabulary every stage after encoding speaks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{MawqifError, Result};

/// The four stance labels of `LABELS.md`, in the scheme's decision order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Report,
    Quotation,
    Endorsement,
    Opinion,
}

impl Label {
    /// Canonical order of scores and of head outputs.
    pub const ALL: [Label; 4] = [
        Label::Report,
        Label::Quotation,
        Label::Endorsement,
        Label::Opinion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Report => "report",
            Label::Quotation => "quotation",
            Label::Endorsement => "endorsement",
            Label::Opinion => "opinion",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Label {
    type Err = MawqifError;
    fn from_str(s: &str) -> Result<Self> {
        Label::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| MawqifError::UnknownLabel(s.to_string()))
    }
}

/// Probabilities of the four labels, in [`Label::ALL`] order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores(pub [f32; 4]);

impl Scores {
    pub fn from_logits(logits: &[f32]) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut p = [0f32; 4];
        let mut sum = 0.0;
        for (k, &z) in logits.iter().take(4).enumerate() {
            p[k] = (z - max).exp();
            sum += p[k];
        }
        for v in &mut p {
            *v /= sum;
        }
        Scores(p)
    }

    /// All mass on one label.
    pub fn certain(label: Label) -> Self {
        let mut p = [0f32; 4];
        p[label.index()] = 1.0;
        Scores(p)
    }

    /// The most probable label; ties go to the earlier label in the scheme's order.
    pub fn best(&self) -> Label {
        let mut best = 0;
        for k in 1..4 {
            if self.0[k] > self.0[best] {
                best = k;
            }
        }
        Label::ALL[best]
    }

    pub fn get(&self, label: Label) -> f32 {
        self.0[label.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_picks_max() {
        let s = Scores::from_logits(&[1.0, 3.0, 0.5, -2.0]);
        assert!((s.0.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(s.best(), Label::Quotation);
    }

    #[test]
    fn label_round_trip() {
        for l in Label::ALL {
            assert_eq!(l.as_str().parse::<Label>().unwrap(), l);
        }
        assert!("praise".parse::<Label>().is_err());
    }
}
