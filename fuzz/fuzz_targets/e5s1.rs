//! Fuzz target `e5s1`: the properties are in tests/integration/common/properties.rs
//! (`check_e5s1`), shared with `cargo test`; FUZZING.md lists them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mawqif_fuzz::properties::check_e5s1(data));
