//! A `pytorch_model.bin` written by real PyTorch (`torch.save` of a
//! BertForMaskedLM state dict, ARBERT-style: `bert.` prefix, extra `cls.`
//! tensors, vocab.txt only) loads and gives what `transformers` computes.
//! Fixture: tests/fixtures/tiny-bert-pth/, made by scripts/gen-pth-fixture.sh.

use std::path::Path;

use mawqif::encode::fast::Precision;
use mawqif::encode::Engine;
use mawqif::{Embedder, RunOptions};
use serde_json::Value;

const FIXTURE: &str = "tests/fixtures/tiny-bert-pth";

fn expected() -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("expected.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn wordpiece_ids_match_transformers_bert_tokenizer() {
    let embedder = Embedder::open(Path::new(FIXTURE), Engine::auto()).unwrap();
    for case in expected() {
        let text = case["text"].as_str().unwrap().to_string();
        let got = embedder
            .tokenizer()
            .encode(std::slice::from_ref(&text))
            .unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got[0].ids, want, "{text}");
    }
}

#[test]
fn hamza_forms_and_shadda_survive_vocab_txt_wordpiece() {
    let embedder = Embedder::open(Path::new(FIXTURE), Engine::auto()).unwrap();
    // Each word is in the vocabulary exactly as written: a tokenizer that
    // lowercased, stripped accents or folded hamza would produce [UNK] or
    // other pieces instead.
    for word in [
        "أعلن",
        "إعلان",
        "آخر",
        "مؤتمر",
        "سئل",
        "شؤون",
        "محمّد",
        "الشّعب",
        "شدّد",
    ] {
        let tokens = embedder.tokenizer().tokens(word).unwrap();
        assert!(tokens.iter().any(|t| t == word), "{word} became {tokens:?}");
    }
}

#[test]
fn pytorch_bin_embeddings_match_transformers() {
    // Both f32 engines must reproduce transformers to float rounding.
    for engine in [Engine::Candle, Engine::Fast(Precision::F32)] {
        check_against_transformers(engine);
    }
}

fn check_against_transformers(engine: Engine) {
    let embedder = Embedder::open(Path::new(FIXTURE), engine).unwrap();
    let cases = expected();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let (vectors, warnings) = embedder
        .embed(&texts, &RunOptions::default(), |_| {})
        .unwrap();
    assert!(warnings.is_empty());
    for (case, got) in cases.iter().zip(&vectors) {
        let want = floats(&case["mean"]);
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // The fast engine keeps the word-embedding table in f16.
        let bound = if engine == Engine::Candle { 1e-4 } else { 5e-4 };
        assert!(
            worst < bound,
            "{engine:?} {}: max abs diff {worst}",
            case["text"]
        );
    }
}
