//! `mawqif train`: embed labelled sentences (cached), fit a head, report.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use mawqif::classify::{FeatureSpec, Head, Label, Scores};
use mawqif::eval::{GoldItem, Matched, Prediction, BOOTSTRAP_SEED};
use mawqif::finetune::{fine_tune, FineTuneOptions, FineTuned};
use mawqif::scoreboard::SystemReport;
use mawqif::train::{
    embed_with_cache, features, folds_by_doc, head_spec, load_examples, split_by_doc, train_head,
    Example, HeadKind, TrainOptions,
};
use mawqif::{Classifier, Embedder};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
mawqif train --data eval/train/gold --out /tmp/head            # 20% of texts held out as dev\n  \
mawqif train --data eval/train/gold --cv-by-text 5 --out /tmp/head\n  \
mawqif train --data eval/train/gold --dev-fraction 0 --out models/heads/multilingual-e5-small\n\n\
Files under eval/fixtures/ are refused: they are held-out evaluation data.")]
pub struct TrainArgs {
    /// Gold JSONL files or directories of them (repeatable)
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Encoder: a model directory or a hub id (`org/name[@REV]`, downloaded on first use)
    #[arg(long = "model", default_value = mawqif::DEFAULT_MODEL_DIR)]
    model_spec: String,
    /// The model directory `--model` resolves to.
    #[arg(skip)]
    model: PathBuf,
    /// Where to write head.safetensors and head.json
    #[arg(long)]
    out: PathBuf,
    /// Head type
    #[arg(long, value_enum, default_value = "softmax")]
    head_type: HeadTypeArg,
    /// Hidden units of the MLP head
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Leave out the transparent cue features (cue-word counts, quote marks…)
    #[arg(long)]
    no_cues: bool,
    /// L2 penalty on the weights
    #[arg(long, default_value_t = 0.3)]
    l2: f32,
    /// Full-batch optimisation steps
    #[arg(long, default_value_t = 400)]
    epochs: usize,
    /// Adam learning rate
    #[arg(long, default_value_t = 0.01)]
    lr: f32,
    /// Do not weight classes by inverse frequency
    #[arg(long)]
    no_class_weights: bool,
    /// Seed of the split, the folds and the initialisation
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// Share of texts held out as the dev split (0 trains on everything)
    #[arg(long, default_value_t = 0.2)]
    dev_fraction: f64,
    /// Also report K-fold cross-validation grouped by text
    #[arg(long)]
    cv_by_text: Option<usize>,
    /// Fine-tune the top encoder layers with the head (early stopping on the dev split);
    /// only the changed layers are stored, beside the head
    #[arg(long)]
    fine_tune: bool,
    /// How many top encoder layers --fine-tune trains
    #[arg(long, default_value_t = 4)]
    fine_tune_layers: usize,
    /// Most epochs of --fine-tune (fewer when the dev score stops improving)
    #[arg(long, default_value_t = 4)]
    fine_tune_epochs: usize,
    /// AdamW learning rate of the encoder layers under --fine-tune
    #[arg(long, default_value_t = 2e-5)]
    lr_encoder: f64,
    /// AdamW learning rate of the head under --fine-tune
    #[arg(long, default_value_t = 1e-3)]
    lr_head: f64,
    /// AdamW weight decay under --fine-tune
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Sentences per encoder forward pass (and per fine-tuning step)
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// CPU threads for the encoder
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum HeadTypeArg {
    Softmax,
    Mlp,
}

/// Vectors for every example, computing only those missing from the cache.
fn embed_cached(
    embedder: &Embedder,
    examples: &[Example],
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let bar = crate::progress(0, "embedding");
    let vectors = embed_with_cache(
        embedder,
        &texts,
        batch_size,
        |n, path| {
            bar.set_length(n as u64);
            bar.suspend(|| {
                eprintln!(
                    "embedding {n} of {} sentences (cache: {})",
                    texts.len(),
                    path.display()
                )
            });
        },
        |n| bar.inc(n as u64),
    )?;
    bar.finish_and_clear();
    Ok(vectors)
}

/// Score predictions for `idx` against the examples' labels.
fn report(
    name: &str,
    examples: &[Example],
    idx: &[usize],
    scores: impl IntoIterator<Item = Scores>,
) -> SystemReport {
    let pairs = idx
        .iter()
        .zip(scores)
        .map(|(&i, s)| {
            let e = &examples[i];
            let g = GoldItem {
                id: format!("{}#{i}", e.doc),
                start: None,
                end: None,
                text: e.text.clone(),
                label: e.label,
                alt: e.alt,
            };
            let p = Prediction {
                id: Some(g.id.clone()),
                span: None,
                text: e.text.clone(),
                label: s.best(),
                scores: Some(s),
            };
            (g, p)
        })
        .collect();
    let matched = Matched {
        pairs,
        missing: Vec::new(),
        extra: 0,
    };
    SystemReport::from_matched(name, &matched, BOOTSTRAP_SEED)
}

fn score(
    name: &str,
    head: &Head,
    rows: &[Vec<f32>],
    examples: &[Example],
    idx: &[usize],
) -> SystemReport {
    report(
        name,
        examples,
        idx,
        idx.iter().map(|&i| head.predict(&rows[i])),
    )
}

fn fit(
    rows: &[Vec<f32>],
    examples: &[Example],
    idx: &[usize],
    spec: mawqif::classify::HeadSpec,
    options: &TrainOptions,
) -> Result<Head> {
    let x: Vec<Vec<f32>> = idx.iter().map(|&i| rows[i].clone()).collect();
    let y: Vec<Label> = idx.iter().map(|&i| examples[i].label).collect();
    Ok(train_head(&x, &y, spec, options)?)
}

pub fn run(mut args: TrainArgs) -> Result<()> {
    crate::set_threads(args.threads);
    if !(0.0..1.0).contains(&args.dev_fraction) {
        bail!("--dev-fraction must be in [0, 1)");
    }
    let examples = load_examples(&args.data)?;
    if examples.is_empty() {
        bail!("no labelled sentences in {:?}", args.data);
    }
    // After the data checks: a bad data file should not wait for a download.
    args.model = crate::cli_hub::resolve_model_dir(&args.model_spec)?;
    if args.fine_tune {
        return run_fine_tune(&args, &examples);
    }
    let embedder = Embedder::load(&args.model)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let started = std::time::Instant::now();
    let vectors = embed_cached(&embedder, &examples, args.batch_size.max(1))?;
    let feature_spec = FeatureSpec {
        embedding_dim: embedder.dim(),
        cues: !args.no_cues,
    };
    let rows: Vec<Vec<f32>> = vectors
        .iter()
        .zip(&examples)
        .map(|(v, e)| features(v, &e.text, &feature_spec))
        .collect();
    let kind = match args.head_type {
        HeadTypeArg::Softmax => HeadKind::Softmax,
        HeadTypeArg::Mlp => HeadKind::Mlp {
            hidden: args.hidden.max(1),
        },
    };
    let options = TrainOptions {
        kind,
        l2: args.l2,
        epochs: args.epochs,
        learning_rate: args.lr,
        class_weights: !args.no_class_weights,
        seed: args.seed,
    };
    let spec = || {
        head_spec(
            &embedder.profile.id,
            &embedder.profile.revision,
            embedder.profile.pooling,
            feature_spec.clone(),
            kind,
        )
    };
    let mut training_info = serde_json::json!({
        "data": args.data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "sentences": examples.len(),
        "seed": args.seed,
        "l2": args.l2,
        "epochs": args.epochs,
        "learning_rate": args.lr,
        "class_weights": !args.no_class_weights,
        "dev_fraction": args.dev_fraction,
    });

    if let Some(k) = args.cv_by_text {
        training_info["cv_by_text"] =
            cross_validate(&examples, k, args.seed, "", |train, test| {
                let head = fit(&rows, &examples, train, spec(), &options)?;
                Ok((score("fold", &head, &rows, &examples, test), String::new()))
            })?;
    }

    let (train_idx, dev_idx) = split_by_doc(&examples, args.dev_fraction, args.seed);
    let mut head = fit(&rows, &examples, &train_idx, spec(), &options)?;
    if !dev_idx.is_empty() {
        let r = score("dev", &head, &rows, &examples, &dev_idx);
        let m = &r.metrics;
        println!(
            "dev split ({} sentences in {} texts): accuracy {:.3} [{:.3}–{:.3}], lenient {:.3}, macro-F1 {:.3} [{:.3}–{:.3}], kappa {:.3}",
            dev_idx.len(),
            {
                let mut d: Vec<&str> = dev_idx.iter().map(|&i| examples[i].doc.as_str()).collect();
                d.sort();
                d.dedup();
                d.len()
            },
            m.accuracy.value,
            m.accuracy.low,
            m.accuracy.high,
            m.lenient_accuracy,
            m.macro_f1.value,
            m.macro_f1.low,
            m.macro_f1.high,
            m.kappa
        );
        for l in Label::ALL {
            let c = &m.per_class[l.as_str()];
            println!(
                "  {:<12} P {:.3} R {:.3} F1 {:.3} (n={})",
                l.as_str(),
                c.precision,
                c.recall,
                c.f1,
                c.support
            );
        }
        training_info["dev"] = serde_json::json!({"sentences": dev_idx.len(), "accuracy": m.accuracy.value, "macro_f1": m.macro_f1.value});
    }
    training_info["train_sentences"] = serde_json::json!(train_idx.len());
    head.spec.training = training_info;
    save_head(&head, &args.out)?;
    eprintln!(
        "wrote {}/head.safetensors and head.json ({} training sentences, {:.1}s)",
        args.out.display(),
        train_idx.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn save_head(head: &Head, out: &Path) -> Result<()> {
    head.save(out)
        .with_context(|| format!("writing head to {}", out.display()))
}

/// K-fold cross-validation grouped by text: `run_fold(train, test)` scores one
/// fold. Prints each fold and the mean ± std of macro-F1; returns them as JSON.
fn cross_validate(
    examples: &[Example],
    k: usize,
    seed: u64,
    what: &str,
    mut run_fold: impl FnMut(&[usize], &[usize]) -> Result<(SystemReport, String)>,
) -> Result<serde_json::Value> {
    if k < 2 {
        bail!("--cv-by-text needs K >= 2");
    }
    let folds = folds_by_doc(examples, k, seed);
    let mut f1s = Vec::new();
    for (f, test) in folds.iter().enumerate() {
        let train: Vec<usize> = folds
            .iter()
            .enumerate()
            .filter(|(g, _)| *g != f)
            .flat_map(|(_, v)| v.clone())
            .collect();
        let (r, extra) = run_fold(&train, test)?;
        eprintln!(
            "fold {}: {} sentences, accuracy {:.3}, macro-F1 {:.3}{extra}",
            f + 1,
            test.len(),
            r.metrics.accuracy.value,
            r.metrics.macro_f1.value
        );
        f1s.push(r.metrics.macro_f1.value);
    }
    let mean = f1s.iter().sum::<f64>() / f1s.len() as f64;
    let std =
        (f1s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (f1s.len() as f64 - 1.0)).sqrt();
    println!("cross-validation by text ({k} folds{what}): macro-F1 {mean:.3} ± {std:.3}");
    Ok(serde_json::json!({"folds": k, "macro_f1_mean": mean, "macro_f1_std": std}))
}

fn fine_tune_options(args: &TrainArgs) -> FineTuneOptions {
    FineTuneOptions {
        layers: args.fine_tune_layers.max(1),
        max_epochs: args.fine_tune_epochs.max(1),
        lr_encoder: args.lr_encoder,
        lr_head: args.lr_head,
        weight_decay: args.weight_decay,
        batch_size: args.batch_size.max(1),
        seed: args.seed,
        cues: !args.no_cues,
        ..FineTuneOptions::default()
    }
}

/// Fine-tune on `train`, early-stopping on `dev`; print each epoch.
fn tune(args: &TrainArgs, train: &[Example], dev: &[Example]) -> Result<FineTuned> {
    Ok(fine_tune(
        &args.model,
        train,
        dev,
        &fine_tune_options(args),
        |r| {
            let loss = if r.train_loss.is_nan() {
                "-".to_string()
            } else {
                format!("{:.4}", r.train_loss)
            };
            match r.dev_macro_f1 {
                Some(f1) => eprintln!(
                    "  epoch {}: train loss {loss}, dev macro-F1 {f1:.3}",
                    r.epoch
                ),
                None => eprintln!("  epoch {}: train loss {loss}", r.epoch),
            }
        },
    )?)
}

/// Classify `idx` with a saved head (the inference path) and score it.
fn score_saved(
    args: &TrainArgs,
    head_dir: &Path,
    examples: &[Example],
    idx: &[usize],
) -> Result<SystemReport> {
    let classifier = Classifier::load_neural(&args.model, Some(head_dir))?;
    let texts: Vec<&str> = idx.iter().map(|&i| examples[i].text.as_str()).collect();
    let options = mawqif::RunOptions {
        batch_size: args.batch_size.max(1),
        allow_long: true,
    };
    let result = classifier.classify(&texts, &options, |_| {})?;
    Ok(report("dev", examples, idx, result.scores))
}

fn pick(examples: &[Example], idx: &[usize]) -> Vec<Example> {
    idx.iter().map(|&i| examples[i].clone()).collect()
}

fn run_fine_tune(args: &TrainArgs, examples: &[Example]) -> Result<()> {
    let started = std::time::Instant::now();
    let mut info = serde_json::json!({
        "data": args.data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "sentences": examples.len(),
        "seed": args.seed,
        "fine_tune_layers": args.fine_tune_layers,
        "lr_encoder": args.lr_encoder,
        "lr_head": args.lr_head,
        "weight_decay": args.weight_decay,
        "dev_fraction": args.dev_fraction,
    });
    if let Some(k) = args.cv_by_text {
        let scratch = std::env::temp_dir().join(format!("mawqif-cv-{}", std::process::id()));
        let result = cross_validate(examples, k, args.seed, ", fine-tuned", |rest, test| {
            // Early stopping uses texts from the training folds only.
            let rest_ex = pick(examples, rest);
            let (tr, dv) = split_by_doc(&rest_ex, 0.2, args.seed);
            eprintln!(
                "fine-tuning on {} sentences, early stopping on {}",
                tr.len(),
                dv.len()
            );
            let tuned = tune(args, &pick(&rest_ex, &tr), &pick(&rest_ex, &dv))?;
            mawqif::finetune::save(&tuned, &scratch)?;
            let r = score_saved(args, &scratch, examples, test)?;
            Ok((r, format!(" (best epoch {})", tuned.best_epoch)))
        });
        let _ = std::fs::remove_dir_all(&scratch);
        info["cv_by_text"] = result?;
    }
    let (train_idx, dev_idx) = split_by_doc(examples, args.dev_fraction, args.seed);
    eprintln!(
        "fine-tuning the top {} layers on {} sentences ({} for early stopping)",
        args.fine_tune_layers,
        train_idx.len(),
        dev_idx.len()
    );
    let mut tuned = tune(args, &pick(examples, &train_idx), &pick(examples, &dev_idx))?;
    info["best_epoch"] = serde_json::json!(tuned.best_epoch);
    info["train_sentences"] = serde_json::json!(train_idx.len());
    info["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
    tuned.head.spec.training = info;
    mawqif::finetune::save(&tuned, &args.out)?;
    if !dev_idx.is_empty() {
        let r = score_saved(args, &args.out, examples, &dev_idx)?;
        println!(
            "dev split ({} sentences, inference path): accuracy {:.3}, lenient {:.3}, macro-F1 {:.3} [{:.3}–{:.3}]",
            dev_idx.len(),
            r.metrics.accuracy.value,
            r.metrics.lenient_accuracy,
            r.metrics.macro_f1.value,
            r.metrics.macro_f1.low,
            r.metrics.macro_f1.high
        );
    }
    eprintln!(
        "wrote {} (head + {} of the top layers, best epoch {}) in {:.0}s",
        args.out.display(),
        mawqif::finetune::ENCODER_OVERRIDE_FILE,
        tuned.best_epoch,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
