//! Stage 1 and 2 over plain text: reading user files ([`input`]), cutting
//! them into units with byte spans ([`segment`]), and preparing each unit's
//! text for the encoder ([`preprocess`]); the web spellings that training
//! mixes in ([`spelling`]).

pub mod arabic;
pub mod input;
pub mod preprocess;
pub mod segment;
pub mod spelling;

pub use preprocess::{Preprocessing, Preprocessor};
pub use segment::{Segment, Segmenter};
pub use spelling::{web_spelling, SpellingVariant};
