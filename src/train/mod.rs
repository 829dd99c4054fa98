//! Training heads (and fine-tuning encoders) on labelled sentences.
//!
//! [`data`] loads gold files and splits them by text; [`fit`] fits a head
//! on feature rows; [`cache`] keeps sentence vectors on disk; [`finetune`]
//! trains encoder layers with the head; [`average`] merges runs that differ
//! only in their seed; [`recipe`] is the one place the steps are put
//! together (dev split, cross-validation, scoring); [`auto`] trains a head
//! on first use for an encoder that has none.

pub mod auto;
pub mod average;
pub mod cache;
pub mod data;
pub mod finetune;
pub mod fit;
pub mod recipe;

pub use auto::load_or_train;
pub use average::{average_runs, TrainedRun};
pub use data::{label_set, load_examples, Example};
pub use finetune::{FineTuneOptions, ENCODER_OVERRIDE_FILE};
pub use fit::{train_head, HeadKind, TrainOptions};
pub use recipe::{
    average_saved_runs, cross_validate, train_fine_tuned, train_frozen, AveragedRuns,
    DevComparison, FineTuneTraining, FrozenTraining, SavedHeadScoring, TrainObserver, Trained,
};
