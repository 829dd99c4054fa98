//! Scoring predictions against gold labels: reading gold sets and
//! prediction files ([`gold`]), the metrics ([`metrics`]), and the
//! side-by-side report of several systems ([`scoreboard`]).

pub mod gold;
pub mod metrics;
pub mod scoreboard;

pub use gold::{
    match_predictions, predictions_for_gold, read_gold, read_predictions, GoldFormat, GoldItem,
    Matched, Prediction,
};
pub use metrics::{majority_label, metrics, Metrics, BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED};
pub use scoreboard::{build_report, EvalReport, SystemReport};
