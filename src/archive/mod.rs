//! Whole archives: documents from text files or JSONL/CSV records
//! ([`records`]), split over processes without a coordinator ([`shard`]),
//! classified as a stream in input order with memory bounded by the batch
//! ([`stream`]), into output that a killed run can resume ([`resume`]).

pub mod records;
pub mod resume;
pub mod shard;
pub mod stream;

pub use records::{documents, Document, InputFailure, InputFormat, RecordFields};
pub use resume::ResumableOutput;
pub use shard::Shard;
pub use stream::{DocInfo, Sink, StreamError, Streamer};
