//! All integration tests in one binary: each test file used to be its own
//! binary linking candle and the whole crate, which dominated build time.

mod common;

/// Counts allocations per thread, so the fuzz checks' memory bounds hold
/// here as in the fuzz crate (which makes a bound breach abort instead).
#[global_allocator]
static ALLOCATOR: common::properties::CountingAlloc =
    common::properties::CountingAlloc { refuse: false };

mod arabert_parity;
mod archive;
mod cli;
mod closed_stdout;
mod e5_model;
mod e5_parity;
mod engines;
mod finetune;
mod fixtures;
mod fuzz_regressions;
mod hub;
mod kills;
mod label_sets;
mod pipeline;
mod pth_checkpoint;
mod python_hub;
mod serve;
mod serve_browser;
mod tokenizer_parity;
