//! Fine-tuning the tiny BERT: only what changed is stored, and the
//! inference path (updates merged into the weights at load) computes what
//! the trainer computed; runs that differ only in their seed average into
//! one head.

use mawqif::encode::fast::Precision;
use mawqif::train::finetune::{fine_tune, save, FineTuneOptions, ENCODER_OVERRIDE_FILE};
use mawqif::train::recipe::Quiet;
use mawqif::train::{
    average_saved_runs, load_examples, train_fine_tuned, FineTuneTraining, SavedHeadScoring,
};
use mawqif::{Classifier, Embedder, Engine, LoadOptions, RunOptions};

/// Two training texts, in order.
fn two_texts() -> Vec<mawqif::train::Example> {
    load_examples(&[
        "eval/train/gold/a01.gold.jsonl".into(),
        "eval/train/gold/b02.gold.jsonl".into(),
    ])
    .unwrap()
}

/// One layer, three epochs, a high learning rate: enough for the tiny BERT
/// to move in well under a second.
fn quick_options() -> FineTuneOptions {
    FineTuneOptions {
        layers: 1,
        max_epochs: 3,
        patience: 5,
        lr_encoder: 1e-2,
        rank: 4,
        precision: Precision::F32,
        ..FineTuneOptions::default()
    }
}

#[test]
fn fine_tune_stores_only_what_changed_and_inference_computes_the_same() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let examples = two_texts();
    let (train, dev) = examples.split_at(examples.len() - 10);
    let options = quick_options();
    let mut epochs = 0;
    let tuned = fine_tune(&dir, train, &[], &options, |_| epochs += 1).unwrap();
    assert_eq!(epochs, 3, "without a dev split every epoch runs");
    // One layer: 6 weight groups (Q, K, V, attention output, intermediate,
    // output) × (lora_a, lora_b, bias) + 2 layer norms × (weight, bias).
    assert_eq!(tuned.overrides.len(), 22, "{:?}", tuned.overrides.keys());
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
    let f32_engine = Engine::Fast(Precision::F32);
    let (base, _) = Embedder::open(&dir, f32_engine)
        .unwrap()
        .embed(&texts, &opts, |_| {})
        .unwrap();
    let (tuned_vecs, _) = Embedder::load(
        &mawqif::model::ModelDir::open(&dir).unwrap(),
        Some(&head_dir.join(ENCODER_OVERRIDE_FILE)),
        f32_engine,
    )
    .unwrap()
    .embed(&texts, &opts, |_| {})
    .unwrap();
    assert_ne!(base, tuned_vecs);

    // With a dev split: the epoch kept is the best one, and the saved model
    // scores the dev sentences as the trainer did.
    let tuned = fine_tune(&dir, train, dev, &options, |_| {}).unwrap();
    let f1s: Vec<f64> = tuned
        .history
        .iter()
        .map(|r| r.dev_macro_f1.unwrap())
        .collect();
    let best = f1s
        .iter()
        .enumerate()
        .fold(0, |b, (i, f)| if *f > f1s[b] { i } else { b });
    assert_eq!(tuned.best_epoch, tuned.history[best].epoch, "{f1s:?}");
    save(&tuned, &head_dir).unwrap();
    let load = LoadOptions {
        engine: f32_engine,
        ..LoadOptions::default()
    };
    let classifier = Classifier::load_neural(&dir, Some(&head_dir), &load).unwrap();
    let previous: Vec<Option<&str>> = dev.iter().map(|e| e.previous.as_deref()).collect();
    let scores = classifier
        .classify_units(&texts, &previous, &opts, |_| {})
        .unwrap()
        .scores;
    assert_eq!(scores.len(), tuned.dev_scores.len());
    for (a, b) in scores.iter().zip(&tuned.dev_scores) {
        for (x, y) in a.probabilities().iter().zip(b.probabilities()) {
            assert!((x - y).abs() < 1e-3, "inference {a:?} vs trainer {b:?}");
        }
    }
}

/// With the previous unit's vector as context: the head reads it, training
/// lowers the loss, and inference computes what the trainer computed, also
/// when a unit's previous unit comes in an earlier call.
#[test]
fn context_embedding_trains_and_inference_reads_the_previous_unit() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let examples = two_texts();
    let (train, dev) = examples.split_at(examples.len() - 10);
    let options = FineTuneOptions {
        context_embedding: true,
        ..quick_options()
    };
    let tuned = fine_tune(&dir, train, dev, &options, |_| {}).unwrap();
    let spec = &tuned.head.spec.features;
    assert!(spec.context_embedding);
    let hidden = spec.embedding_dim;
    let plain = mawqif::head::FeatureSpec {
        context_embedding: false,
        ..spec.clone()
    };
    assert_eq!(spec.len(), plain.len() + hidden + 1);
    let losses: Vec<f64> = tuned.history[1..].iter().map(|r| r.train_loss).collect();
    assert!(
        losses[2] < losses[0],
        "training loss did not fall: {losses:?}"
    );

    let head_dir = tmp.path().join("tuned-context");
    save(&tuned, &head_dir).unwrap();
    let json = std::fs::read_to_string(head_dir.join("head.json")).unwrap();
    assert!(json.contains("\"context_embedding\": true"), "{json}");
    let load = LoadOptions {
        engine: Engine::Fast(Precision::F32),
        ..LoadOptions::default()
    };
    let classifier = Classifier::load_neural(&dir, Some(&head_dir), &load).unwrap();
    let opts = RunOptions::default();
    let texts: Vec<&str> = dev.iter().map(|e| e.text.as_str()).collect();
    let previous: Vec<Option<&str>> = dev.iter().map(|e| e.previous.as_deref()).collect();
    let together = classifier
        .classify_units(&texts, &previous, &opts, |_| {})
        .unwrap()
        .scores;
    let close = |a: &mawqif::label::Scores, b: &mawqif::label::Scores, tol: f32| {
        a.probabilities()
            .iter()
            .zip(b.probabilities())
            .all(|(x, y)| (x - y).abs() < tol)
    };
    for (a, b) in together.iter().zip(&tuned.dev_scores) {
        assert!(close(a, b, 1e-3), "inference {a:?} vs trainer {b:?}");
    }
    // The second half alone: its first unit's previous unit is encoded on
    // the side, and the scores do not change.
    let half = texts.len() / 2;
    let alone = classifier
        .classify_units(&texts[half..], &previous[half..], &opts, |_| {})
        .unwrap()
        .scores;
    for (a, b) in alone.iter().zip(&together[half..]) {
        assert!(close(a, b, 1e-5), "{a:?} vs {b:?}");
    }
    // Another previous unit gives other scores: the context is read.
    let swapped: Vec<Option<&str>> = previous.iter().map(|_| Some(texts[0])).collect();
    let moved = classifier
        .classify_units(&texts, &swapped, &opts, |_| {})
        .unwrap()
        .scores;
    assert!(
        moved
            .iter()
            .zip(&together)
            .skip(2)
            .any(|(a, b)| !close(a, b, 1e-6)),
        "the previous unit did not change any score"
    );
}

/// Two runs on one split that differ only in their run seed: averaging a run
/// with itself changes nothing, the average of two differs from both, and
/// each run and the average are scored on the split's dev texts.
#[test]
fn runs_of_one_split_average_into_one_head() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let examples = two_texts();
    let data = vec![std::path::PathBuf::from("eval/train/gold")];
    let f32_engine = Engine::Fast(Precision::F32);
    let load = LoadOptions {
        engine: f32_engine,
        ..LoadOptions::default()
    };
    let run = |run_seed: u64| {
        let out = tmp.path().join(format!("run{run_seed}"));
        let training = FineTuneTraining {
            options: quick_options(),
            dev_fraction: 0.5,
            cv_folds: None,
            load: load.clone(),
            scratch: tmp.path().join("scratch"),
            run_seed: Some(run_seed),
        };
        train_fine_tuned(&dir, &examples, &data, &training, &out, &mut Quiet).unwrap();
        out
    };
    let (a, b) = (run(13), run(14));
    let json = std::fs::read_to_string(a.join("head.json")).unwrap();
    assert!(json.contains("\"run_seed\": 13"), "{json}");

    let scoring = SavedHeadScoring {
        model_dir: &dir,
        engine: f32_engine,
        batch_size: 8,
    };
    let scores_of = |head_dir: &std::path::Path| {
        let classifier = Classifier::load_neural(&dir, Some(head_dir), &load).unwrap();
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let previous: Vec<Option<&str>> = examples.iter().map(|e| e.previous.as_deref()).collect();
        classifier
            .classify_units(&texts, &previous, &RunOptions::default(), |_| {})
            .unwrap()
            .scores
    };
    let max_gap = |x: &[mawqif::label::Scores], y: &[mawqif::label::Scores]| {
        x.iter()
            .zip(y)
            .flat_map(|(p, q)| {
                p.probabilities()
                    .iter()
                    .zip(q.probabilities())
                    .map(|(u, v)| (u - v).abs())
                    .collect::<Vec<_>>()
            })
            .fold(0.0f32, f32::max)
    };

    let same = tmp.path().join("same");
    average_saved_runs(&[a.clone(), a.clone()], None, &scoring, &same, &mut Quiet).unwrap();
    assert!(max_gap(&scores_of(&a), &scores_of(&same)) < 1e-3);

    let both = tmp.path().join("both");
    let averaged = average_saved_runs(
        &[a.clone(), b.clone()],
        Some(&examples),
        &scoring,
        &both,
        &mut Quiet,
    )
    .unwrap();
    let dev = averaged.dev.expect("dev reports");
    assert_eq!(dev.runs.len(), 2);
    assert!(dev.sentences > 0 && dev.sentences < examples.len());
    let averaged_scores = scores_of(&both);
    assert!(max_gap(&scores_of(&a), &averaged_scores) > 1e-4);
    assert!(max_gap(&scores_of(&b), &averaged_scores) > 1e-4);
    let json = std::fs::read_to_string(both.join("head.json")).unwrap();
    assert!(
        json.contains("\"average_of\"") && json.contains("\"runs_macro_f1\""),
        "{json}"
    );

    // Runs trained on other data share no dev split.
    let fewer = &examples[..examples.len() - 3];
    let Err(err) = average_saved_runs(&[a, b], Some(fewer), &scoring, &both, &mut Quiet) else {
        panic!("runs of other data were averaged");
    };
    let err = err.to_string();
    assert!(err.contains("sentences"), "{err}");
}
