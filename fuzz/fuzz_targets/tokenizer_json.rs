//! Fuzz target `tokenizer_json`: the properties are in tests/integration/common/properties.rs
//! (`check_tokenizer_json`), shared with `cargo test`; FUZZING.md lists them.
#![no_main]

libfuzzer_sys::fuzz_target!(
    // Encode sentences on this thread: rayon's hand-offs between threads
    // cost more than the encoding itself on a loaded machine, and the same
    // code tokenizes each sentence either way.
    init: tokenizers::utils::parallelism::set_parallelism(false),
    |data: &[u8]| mawqif_fuzz::properties::check_tokenizer_json(data)
);
