//! End to end through the library with a tiny random BERT: loading, batching,
//! padding and the head.

use mawqif::Segmenter;
use mawqif::{classify_text, Classifier, Embedder, Engine, LoadOptions, RunOptions};

#[test]
fn article_segments_into_49_units() {
    let text = crate::common::article();
    let units = Segmenter::new().segment(&text);
    assert_eq!(units.len(), 49);
    for u in &units {
        assert_eq!(&text[u.start..u.end], u.text);
    }
    assert!(units
        .iter()
        .all(|u| u.text != "ليبيا 24" && !u.text.contains('⸻')));
    assert_eq!(
        units[0].text,
        "الجيش الوطني وقيادات مصراتة يتفقون على قوة مشتركة بسرت"
    );
    assert!(units[6].text.starts_with("وقال خلال كلمته: «نحن"));
    assert!(units[6].text.ends_with("لا أن يقسمها»."));
}

#[test]
fn tiny_model_labels_every_unit_with_probabilities() {
    let (_tmp, dir) = crate::common::tiny_model_dir();
    let classifier = Classifier::load_neural(&dir, None, &LoadOptions::default()).unwrap();
    let text = crate::common::article();
    let (units, _) = classify_text(
        "article.txt",
        &text,
        &classifier,
        &RunOptions::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(units.len(), 49);
    for u in &units {
        let sum: f32 = u.scores.probabilities().iter().sum();
        assert_eq!(u.scores.labels(), &mawqif::LabelSet::stance());
        assert!((sum - 1.0).abs() < 1e-4, "scores sum to {sum}");
        assert_eq!(&text[u.start..u.end], u.text);
    }
    // A random head on random vectors still should not put everything in one class
    // unless the pooled vectors are all the same (a padding or pooling bug).
    let distinct: std::collections::HashSet<String> = units
        .iter()
        .map(|u| format!("{:.4}", u.scores.probabilities()[0]))
        .collect();
    assert!(distinct.len() > 10, "pooled vectors look identical");
}

#[test]
fn batching_and_padding_do_not_change_vectors() {
    let (_tmp, dir) = crate::common::tiny_model_dir();
    let embedder = Embedder::open(&dir, Engine::auto()).unwrap();
    let text = crate::common::article();
    let units = Segmenter::new().segment(&text);
    let texts: Vec<&str> = units.iter().map(|u| u.text.as_str()).take(12).collect();
    let opts = |b| RunOptions {
        batch_size: b,
        allow_long: true,
    };
    let (one, _) = embedder.embed(&texts, &opts(1), |_| {}).unwrap();
    let (many, _) = embedder.embed(&texts, &opts(12), |_| {}).unwrap();
    let (some, _) = embedder.embed(&texts, &opts(5), |_| {}).unwrap();
    for ((a, b), c) in one.iter().zip(&many).zip(&some) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let e = a
            .iter()
            .zip(c)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-4 && e < 1e-4, "batch changes vectors by {d} / {e}");
    }
}

#[test]
fn long_sentences_truncate_with_a_warning_or_are_refused() {
    let (_tmp, dir) = crate::common::tiny_model_dir();
    let classifier = Classifier::load_neural(&dir, None, &LoadOptions::default()).unwrap();
    // ~100 tokens: over the tiny model's 64, under 4×64: truncated, with a warning.
    let medium = vec!["الجيش"; 100].join(" ");
    let res = classifier
        .classify(&[medium.as_str()], &RunOptions::default(), |_| {})
        .unwrap();
    assert_eq!(res.warnings.len(), 1);
    assert!(res.warnings[0].contains("truncated"));
    // Far over the limit: refused unless --allow-long.
    let huge = vec!["الجيش"; 1000].join(" ");
    let err = classifier
        .classify(&[huge.as_str()], &RunOptions::default(), |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("more than"), "{err}");
    let ok = classifier
        .classify(
            &[huge.as_str()],
            &RunOptions {
                batch_size: 4,
                allow_long: true,
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(ok.scores.len(), 1);
}

#[test]
fn cue_baseline_needs_no_model() {
    let res = Classifier::Cues
        .classify(
            &["رحّبت الأحزاب بالاتفاق ووصفته بأنه إنجاز وطني."],
            &RunOptions::default(),
            |_| {},
        )
        .unwrap();
    assert_eq!(res.scores[0].best(), mawqif::Stance::Endorsement.label());
}

#[test]
fn bert_prefixed_tensor_names_load_the_same_model() {
    let (_tmp, dir) = crate::common::tiny_model_dir();
    let texts = ["الجيش الوطني يعلن تشكيل قوة مشتركة", "وقال خلال كلمته"];
    let opts = RunOptions::default();
    let (bare, _) = Embedder::open(&dir, Engine::auto())
        .unwrap()
        .embed(&texts, &opts, |_| {})
        .unwrap();
    let st = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).unwrap();
    let renamed: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (format!("bert.{k}"), v))
        .collect();
    candle_core::safetensors::save(&renamed, &st).unwrap();
    let (prefixed, _) = Embedder::open(&dir, Engine::auto())
        .unwrap()
        .embed(&texts, &opts, |_| {})
        .unwrap();
    assert_eq!(bare, prefixed);
}
