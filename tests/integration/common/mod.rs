//! Test helpers: a tiny random BERT generated on the fly (2 layers, hidden
//! 32, WordPiece vocabulary of Arabic words and letters) with a head for it.
#![allow(dead_code)]

pub mod e5s1_file;
pub mod http;
pub mod mock_hub;
pub mod properties;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use mawqif::head::{FeatureSpec, Head, HeadSpec};
use mawqif::model::Pooling;
use mawqif::rng::SplitMix64;

pub const HIDDEN: usize = 32;

/// Proxy variables a CI machine may set: tests that talk to the mock hub
/// do not inherit them (mawqif never proxies loopback anyway, Python would).
pub const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];
pub const MAX_POSITIONS: usize = 64;

pub fn article() -> String {
    std::fs::read_to_string("eval/fixtures/article.txt").expect("eval/fixtures/article.txt")
}

fn vocab(source: &str) -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut chars: Vec<char> = source.chars().filter(|c| !c.is_whitespace()).collect();
    chars.sort();
    chars.dedup();
    for c in &chars {
        v.push(c.to_string());
        v.push(format!("##{c}"));
    }
    let mut words: Vec<&str> = source
        .split_whitespace()
        .filter(|w| w.chars().all(char::is_alphabetic))
        .collect();
    words.sort();
    words.dedup();
    v.extend(words.into_iter().take(300).map(str::to_string));
    v
}

/// Write a tiny BERT model directory (random weights, seeded) with a head in `<dir>/head`.
pub fn tiny_model(dir: &Path) {
    tiny_model_with_heads(dir, 4);
}

/// The tiny model with `heads` attention heads: 2 gives a head size of 16,
/// the smallest the fast engine's vectorised attention runs on.
pub fn tiny_model_with_heads(dir: &Path, heads: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let vocab = vocab(&article());
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    let config = serde_json::json!({
        "vocab_size": vocab.len(), "hidden_size": HIDDEN, "num_hidden_layers": 2,
        "num_attention_heads": heads, "intermediate_size": 64, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
        "pad_token_id": 0, "classifier_dropout": null, "model_type": "bert"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut rng = SplitMix64::new(7);
    let mut t = |shape: &[usize], scale: f64, offset: f64| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| ((rng.unit() * 2.0 - 1.0) * scale + offset) as f32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    let h = HIDDEN;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    tensors.insert(
        "embeddings.word_embeddings.weight".into(),
        t(&[vocab.len(), h], 0.5, 0.0),
    );
    tensors.insert(
        "embeddings.position_embeddings.weight".into(),
        t(&[MAX_POSITIONS, h], 0.1, 0.0),
    );
    tensors.insert(
        "embeddings.token_type_embeddings.weight".into(),
        t(&[2, h], 0.1, 0.0),
    );
    tensors.insert("embeddings.LayerNorm.weight".into(), t(&[h], 0.0, 1.0));
    tensors.insert("embeddings.LayerNorm.bias".into(), t(&[h], 0.0, 0.0));
    for l in 0..2 {
        let p = |s: &str| format!("encoder.layer.{l}.{s}");
        for (name, shape) in [
            ("attention.self.query", [h, h]),
            ("attention.self.key", [h, h]),
            ("attention.self.value", [h, h]),
            ("attention.output.dense", [h, h]),
            ("intermediate.dense", [64, h]),
            ("output.dense", [h, 64]),
        ] {
            tensors.insert(p(&format!("{name}.weight")), t(&shape, 0.3, 0.0));
            tensors.insert(p(&format!("{name}.bias")), t(&[shape[0]], 0.05, 0.0));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            tensors.insert(p(&format!("{ln}.weight")), t(&[h], 0.0, 1.0));
            tensors.insert(p(&format!("{ln}.bias")), t(&[h], 0.0, 0.0));
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    tiny_head().save(&dir.join("head")).unwrap();
}

/// A fixed linear head over the tiny model's mean-pooled vectors.
pub fn tiny_head() -> Head {
    let mut rng = SplitMix64::new(11);
    let w: Vec<f32> = (0..4 * HIDDEN)
        .map(|_| (rng.unit() * 2.0 - 1.0) as f32)
        .collect();
    Head {
        spec: HeadSpec::new(
            mawqif::LabelSet::stance(),
            "tiny",
            "test",
            Pooling::Mean,
            FeatureSpec::plain(HIDDEN),
            None,
        ),
        feature_mean: vec![0.0; HIDDEN],
        feature_scale: vec![1.0; HIDDEN],
        layers: vec![(w, vec![0.0; 4])],
    }
}

/// A temp dir holding a tiny model at `<tmp>/tiny`.
pub fn tiny_model_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    tiny_model(&dir);
    (tmp, dir)
}

pub fn mawqif(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mawqif"))
        .args(args)
        .output()
        .expect("run mawqif")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The real e5 model, or None (a skip) unless MAWQIF_REQUIRE_MODEL is set.
pub fn e5_model() -> Option<PathBuf> {
    let p = PathBuf::from("models/multilingual-e5-small");
    if p.join("model.safetensors").is_file() {
        return Some(p);
    }
    assert!(
        std::env::var_os("MAWQIF_REQUIRE_MODEL").is_none(),
        "MAWQIF_REQUIRE_MODEL is set but {} is missing: run scripts/fetch-local-model.sh",
        p.display()
    );
    eprintln!(
        "skipping: {} not present (run scripts/fetch-local-model.sh)",
        p.display()
    );
    None
}

/// Whether the bf16 path can be tested here. Where it cannot, the test says
/// so loudly, and fails when `MAWQIF_REQUIRE_BF16=1` (CI sets it on CPUs
/// that have AVX-512 BF16, so the default engine never goes untested there).
pub fn bf16_or_skip(what: &str) -> bool {
    if mawqif::encode::fast::bf16_supported() {
        return true;
    }
    assert!(
        std::env::var_os("MAWQIF_REQUIRE_BF16").is_none_or(|v| v != "1"),
        "{what}: this CPU lacks AVX-512 BF16 but MAWQIF_REQUIRE_BF16=1"
    );
    eprintln!("SKIPPED {what}: this CPU lacks AVX-512 BF16");
    false
}
