//! Fine-tuning the top layers of the tiny BERT: only the changed layers are
//! stored, and the inference path reads them back.

use mawqif::train::finetune::{fine_tune, save, FineTuneOptions, ENCODER_OVERRIDE_FILE};
use mawqif::train::load_examples;
use mawqif::{Classifier, Embedder, Engine, LoadOptions, RunOptions};

#[test]
fn fine_tune_stores_only_the_top_layers_and_inference_uses_them() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let examples = load_examples(&[
        "eval/train/gold/a01.gold.jsonl".into(),
        "eval/train/gold/b02.gold.jsonl".into(),
    ])
    .unwrap();
    let (train, dev) = examples.split_at(examples.len() - 10);
    let options = FineTuneOptions {
        layers: 1,
        max_epochs: 2,
        patience: 5,
        lr_encoder: 1e-2,
        ..FineTuneOptions::default()
    };
    let mut epochs = 0;
    let tuned = fine_tune(&dir, train, &[], &options, |_| epochs += 1).unwrap();
    assert_eq!(epochs, 2, "without a dev split every epoch runs");
    assert_eq!(tuned.overrides.len(), 16, "one BERT layer has 16 tensors");
    assert!(
        tuned
            .overrides
            .keys()
            .all(|k| k.starts_with("encoder.layer.1.")),
        "{:?}",
        tuned.overrides.keys()
    );

    let head_dir = tmp.path().join("tuned");
    save(&tuned, &head_dir).unwrap();
    assert!(head_dir.join(ENCODER_OVERRIDE_FILE).is_file());
    let json = std::fs::read_to_string(head_dir.join("head.json")).unwrap();
    assert!(json.contains(ENCODER_OVERRIDE_FILE));

    // The trained layer changes the vectors the inference path computes.
    let texts: Vec<&str> = dev.iter().map(|e| e.text.as_str()).collect();
    let opts = RunOptions::default();
    let (base, _) = Embedder::open(&dir, Engine::auto())
        .unwrap()
        .embed(&texts, &opts, |_| {})
        .unwrap();
    let (tuned_vecs, _) = Embedder::load(
        &mawqif::model::ModelDir::open(&dir).unwrap(),
        Some(&head_dir.join(ENCODER_OVERRIDE_FILE)),
        Engine::auto(),
    )
    .unwrap()
    .embed(&texts, &opts, |_| {})
    .unwrap();
    assert_ne!(base, tuned_vecs);
    let classifier =
        Classifier::load_neural(&dir, Some(&head_dir), &LoadOptions::default()).unwrap();
    let res = classifier.classify(&texts, &opts, |_| {}).unwrap();
    assert_eq!(res.scores.len(), dev.len());

    // With a dev split, early stopping keeps the best epoch (0 = before training counts).
    let tuned = fine_tune(&dir, train, dev, &options, |_| {}).unwrap();
    assert!(tuned.best_epoch <= 2);
    assert_eq!(tuned.history[0].epoch, 0);
}
