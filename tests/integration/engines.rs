//! The fast engine computes what candle's BertModel computes: to float
//! rounding in f32; in bf16 within a cosine bound, and with the same labels
//! on the article except where candle's own top two tie (the accuracy guard
//! of the bf16 path).

use std::path::Path;

use mawqif::encode::fast::{bf16_supported, Precision};
use mawqif::encode::Engine;
use mawqif::{Classifier, Embedder, LoadOptions, RunOptions};

fn sentences() -> Vec<String> {
    let seg = mawqif::Segmenter::new();
    seg.segment(&crate::common::article())
        .into_iter()
        .map(|s| s.text)
        .collect()
}

fn embed(dir: &Path, engine: Engine, texts: &[&str], batch_size: usize) -> Vec<Vec<f32>> {
    let e = Embedder::open(dir, engine).unwrap();
    assert_eq!(e.engine(), engine);
    let options = RunOptions {
        batch_size,
        allow_long: true,
    };
    e.embed(texts, &options, |_| {}).unwrap().0
}

/// The largest change of any one label's probability between two runs.
fn probability_move(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// How far the most probable label is ahead of the second.
fn top_two_margin(p: &[f32]) -> f32 {
    let mut sorted = p.to_vec();
    sorted.sort_by(|x, y| y.total_cmp(x));
    sorted[0] - sorted.get(1).copied().unwrap_or(0.0)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn fast_engine_matches_candle_on_the_tiny_model() {
    let (_t, dir) = crate::common::tiny_model_dir();
    let owned = sentences();
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let reference = embed(&dir, Engine::Candle, &texts, 7);
    // Batch size changes packing on the fast engine but not the result.
    for batch in [1, 16] {
        let fast = embed(&dir, Engine::Fast(Precision::F32), &texts, batch);
        for (a, b) in fast.iter().zip(&reference) {
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-3, "f32 batch {batch}: max abs diff {worst}");
        }
    }
    if crate::common::bf16_or_skip("bf16 engine on the tiny model") {
        let fast = embed(&dir, Engine::Fast(Precision::Bf16), &texts, 16);
        for (a, b) in fast.iter().zip(&reference) {
            assert!(cosine(a, b) > 0.995, "bf16 cosine {}", cosine(a, b));
        }
    }
}

/// Head size 16 takes the fast engine's vectorised attention (8 takes the
/// scalar one): the whole model must still match candle.
#[test]
fn vectorised_attention_matches_candle_through_the_whole_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny16");
    crate::common::tiny_model_with_heads(&dir, 2);
    let owned = sentences();
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let reference = embed(&dir, Engine::Candle, &texts, 7);
    let fast = embed(&dir, Engine::Fast(Precision::F32), &texts, 16);
    for (a, b) in fast.iter().zip(&reference) {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "head size 16: max abs diff {worst}");
    }
    crate::common::bf16_or_skip("vectorised attention (needs AVX-512F)");
}

#[test]
fn bf16_on_a_cpu_without_it_is_a_clear_error() {
    if bf16_supported() {
        eprintln!("SKIPPED the missing-bf16 error: this CPU has AVX-512 BF16");
        return;
    }
    let (_t, dir) = crate::common::tiny_model_dir();
    let err = Embedder::open(&dir, Engine::Fast(Precision::Bf16))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("AVX-512 BF16"), "{err}");
}

#[test]
fn fast_engines_keep_e5_labels_on_the_article() {
    let Some(dir) = crate::common::e5_model() else {
        return;
    };
    let owned = sentences();
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let options = RunOptions::default();
    let run = |engine: Engine| {
        let load = LoadOptions {
            engine,
            ..LoadOptions::default()
        };
        let c = Classifier::load_neural(&dir, None, &load).unwrap();
        c.classify(&texts, &options, |_| {}).unwrap().scores
    };
    let reference = run(Engine::Candle);
    let mut engines = vec![Engine::Fast(Precision::F32)];
    if crate::common::bf16_or_skip("bf16 labels of the e5 model") {
        engines.push(Engine::Fast(Precision::Bf16));
    }
    for engine in engines {
        let fast = run(engine);
        // A label may differ only on a tie: where candle's two most probable
        // labels are closer than this engine moved them, so rounding alone
        // decides. At most one such sentence of the 49; a confident sentence
        // that changes label fails.
        let mut ties = 0;
        for (i, (a, b)) in fast.iter().zip(&reference).enumerate() {
            if a.best() == b.best() {
                continue;
            }
            let moved = probability_move(a.probabilities(), b.probabilities());
            let margin = top_two_margin(b.probabilities());
            assert!(
                margin <= 2.0 * moved,
                "{engine:?}: sentence {i} changed label with candle's margin {margin} \
                 but probabilities moved only {moved}"
            );
            ties += 1;
        }
        assert!(ties <= 1, "{engine:?}: {ties} sentences changed label");
        let worst = fast
            .iter()
            .zip(&reference)
            .map(|(a, b)| probability_move(a.probabilities(), b.probabilities()))
            .fold(0f32, f32::max);
        let bound = if engine == Engine::Fast(Precision::F32) {
            1e-3
        } else {
            0.05
        };
        assert!(worst < bound, "{engine:?}: probabilities moved by {worst}");
    }
    let e5 = embed(&dir, Engine::Fast(Precision::F32), &texts, 16);
    let cand = embed(&dir, Engine::Candle, &texts, 16);
    for (a, b) in e5.iter().zip(&cand) {
        assert!(cosine(a, b) > 0.99999, "f32 cosine {}", cosine(a, b));
    }
}
