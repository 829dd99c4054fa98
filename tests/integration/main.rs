//! All integration tests in one binary: each test file used to be its own
//! binary linking candle and the whole crate, which dominated build time.

mod common;

mod arabert_parity;
mod archive;
mod cli;
mod closed_stdout;
mod e5_model;
mod e5_parity;
mod engines;
mod finetune;
mod fixtures;
mod hub;
mod pipeline;
mod pth_checkpoint;
mod python_hub;
mod serve;
mod serve_browser;
mod tokenizer_parity;
