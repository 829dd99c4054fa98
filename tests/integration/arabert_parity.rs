//! The Rust port of AraBERT v0.2 preprocessing against the real `arabert`
//! package (fixture from scripts/gen-arabert-parity.sh), byte for byte.

use mawqif::text::preprocess::arabert_v02;

#[test]
fn matches_the_arabert_package() {
    let raw = std::fs::read_to_string("tests/fixtures/arabert_parity.json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 200);
    let mut failures = Vec::new();
    for c in cases {
        let input = c["input"].as_str().unwrap();
        let expected = c["expected"].as_str().unwrap();
        let ours = arabert_v02(input);
        if ours != expected {
            failures.push(format!(
                "input:    {input:?}\n  expected: {expected:?}\n  ours:     {ours:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
