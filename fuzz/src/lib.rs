//! What the fuzz targets share: the property checks, which live with the
//! integration tests so that `cargo test` replays the seeds and every
//! failing input through the same code, and an allocator that enforces the
//! checks' memory bounds by failing the allocation that breaks one (the
//! process then aborts there, and libFuzzer keeps the input).

#[path = "../../tests/integration/common/properties.rs"]
pub mod properties;

#[global_allocator]
static ALLOCATOR: properties::CountingAlloc = properties::CountingAlloc { refuse: true };
