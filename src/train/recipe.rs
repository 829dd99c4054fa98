//! The training recipes, written once for the CLI, first-use training and
//! library users: a frozen-encoder head, and a fine-tuned encoder with its
//! head; each with an optional dev split by text and cross-validation by
//! text, scored with the same metrics as `mawqif eval`.

use std::path::{Path, PathBuf};

use crate::classifier::{Classifier, LoadOptions};
use crate::encode::{Embedder, Engine, RunOptions};
use crate::error::{MawqifError, Result};
use crate::eval::{GoldItem, Matched, Prediction, SystemReport, BOOTSTRAP_SEED};
use crate::head::{features, FeatureSpec, Head};
use crate::label::{Label, LabelSet, Scores};
use crate::model::ModelDir;

use super::average::{average_runs, TrainedRun};
use super::cache::embed_with_cache;
use super::data::{folds_by_doc, label_set, split_by_doc, Example};
use super::finetune::{fine_tune, save, EpochReport, FineTuneOptions, FineTuned};
use super::fit::{head_spec, train_head, TrainOptions};

/// What a training run tells as it goes (progress bars, logs).
pub trait TrainObserver {
    /// `missing` of `total` sentences are not in the vector cache at `cache`.
    fn embedding(&mut self, _missing: usize, _total: usize, _cache: &Path) {}
    /// A batch of `sentences` was embedded.
    fn embedded(&mut self, _sentences: usize) {}
    /// A free-form step of the recipe.
    fn note(&mut self, _text: &str) {}
    fn epoch_done(&mut self, _epoch: &EpochReport) {}
    fn fold_done(&mut self, _fold: &FoldResult) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl TrainObserver for Quiet {}

/// One fold of cross-validation.
#[derive(Debug, Clone)]
pub struct FoldResult {
    /// From 1.
    pub fold: usize,
    pub sentences: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// The epoch early stopping kept, for fine-tuning.
    pub best_epoch: Option<usize>,
}

/// Cross-validation by text.
#[derive(Debug, Clone)]
pub struct CvSummary {
    pub folds: Vec<FoldResult>,
    pub macro_f1_mean: f64,
    pub macro_f1_std: f64,
}

impl CvSummary {
    /// As recorded in `head.json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "folds": self.folds.len(),
            "macro_f1_mean": self.macro_f1_mean,
            "macro_f1_std": self.macro_f1_std,
        })
    }
}

/// K-fold cross-validation grouped by text: `run_fold(train, test)` trains
/// on one side and scores the other, returning its report and, for
/// fine-tuning, the epoch it kept.
pub fn cross_validate(
    examples: &[Example],
    k: usize,
    seed: u64,
    observer: &mut dyn TrainObserver,
    mut run_fold: impl FnMut(
        &[usize],
        &[usize],
        &mut dyn TrainObserver,
    ) -> Result<(SystemReport, Option<usize>)>,
) -> Result<CvSummary> {
    let folds = folds_by_doc(examples, k.max(2), seed);
    let mut results = Vec::new();
    for (f, test) in folds.iter().enumerate() {
        let train: Vec<usize> = folds
            .iter()
            .enumerate()
            .filter(|(g, _)| *g != f)
            .flat_map(|(_, v)| v.clone())
            .collect();
        let (report, best_epoch) = run_fold(&train, test, observer)?;
        let result = FoldResult {
            fold: f + 1,
            sentences: test.len(),
            accuracy: report.metrics.accuracy.value,
            macro_f1: report.metrics.macro_f1.value,
            best_epoch,
        };
        observer.fold_done(&result);
        results.push(result);
    }
    let f1s: Vec<f64> = results.iter().map(|r| r.macro_f1).collect();
    let mean = f1s.iter().sum::<f64>() / f1s.len() as f64;
    let std =
        (f1s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (f1s.len() as f64 - 1.0)).sqrt();
    Ok(CvSummary {
        folds: results,
        macro_f1_mean: mean,
        macro_f1_std: std,
    })
}

/// Score predictions for examples `idx` against their labels.
pub fn score_examples(
    name: &str,
    labels: &LabelSet,
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
                label: e.label.clone(),
                alt: e.alt.clone(),
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
    SystemReport::from_matched(name, &matched, labels.labels(), BOOTSTRAP_SEED)
}

/// How many texts the examples `idx` come from.
pub fn count_texts(examples: &[Example], idx: &[usize]) -> usize {
    let mut docs: Vec<&str> = idx.iter().map(|&i| examples[i].doc.as_str()).collect();
    docs.sort();
    docs.dedup();
    docs.len()
}

fn pick(examples: &[Example], idx: &[usize]) -> Vec<Example> {
    idx.iter().map(|&i| examples[i].clone()).collect()
}

/// A head on frozen sentence vectors.
#[derive(Debug, Clone)]
pub struct FrozenTraining {
    pub options: TrainOptions,
    /// Cue features next to the vector.
    pub cues: bool,
    /// The previous unit's cue features too.
    pub context: bool,
    /// The previous unit's sentence vector too.
    pub context_embedding: bool,
    /// Share of texts held out for the dev report (0: train on all).
    pub dev_fraction: f64,
    /// Also cross-validate with this many folds by text.
    pub cv_folds: Option<usize>,
    pub batch_size: usize,
    /// mawqif's cache root (the vector cache lives under it).
    pub cache_root: PathBuf,
}

/// What a recipe produced.
pub struct Trained {
    pub head: Head,
    pub train_sentences: usize,
    /// Dev examples and their report, when a dev split was held out.
    pub dev: Option<(Vec<usize>, SystemReport)>,
    pub cv: Option<CvSummary>,
}

/// Train a frozen-encoder head on `examples` (from the gold files `data`).
pub fn train_frozen(
    embedder: &Embedder,
    examples: &[Example],
    data: &[PathBuf],
    training: &FrozenTraining,
    observer: &mut dyn TrainObserver,
) -> Result<Trained> {
    let labels = label_set(examples, training.options.labels.as_ref())?;
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let vectors = {
        let observer = std::cell::RefCell::new(&mut *observer);
        embed_with_cache(
            embedder,
            &texts,
            training.batch_size,
            &training.cache_root,
            |n, path| observer.borrow_mut().embedding(n, texts.len(), path),
            |n| observer.borrow_mut().embedded(n),
        )?
    };
    let feature_spec = FeatureSpec {
        embedding_dim: embedder.dim(),
        cues: training.cues,
        context: training.context,
        context_embedding: training.context_embedding,
    };
    let rows: Vec<Vec<f32>> = vectors
        .iter()
        .zip(examples)
        .enumerate()
        .map(|(i, (v, e))| {
            let previous_vector = i
                .checked_sub(1)
                .filter(|&j| e.follows(&examples[j]))
                .map(|j| vectors[j].as_slice());
            features(
                v,
                &e.text,
                e.previous.as_deref(),
                previous_vector,
                &feature_spec,
            )
        })
        .collect();
    let options = &training.options;
    let fit = |idx: &[usize]| -> Result<Head> {
        let x: Vec<Vec<f32>> = idx.iter().map(|&i| rows[i].clone()).collect();
        let y: Vec<Label> = idx.iter().map(|&i| examples[i].label.clone()).collect();
        let spec = head_spec(
            labels.clone(),
            &embedder.profile.id,
            &embedder.profile.revision,
            embedder.profile.pooling,
            feature_spec.clone(),
            options.kind,
        );
        train_head(&x, &y, spec, options)
    };
    let score = |name: &str, head: &Head, idx: &[usize]| {
        score_examples(
            name,
            &labels,
            examples,
            idx,
            idx.iter().map(|&i| head.predict(&rows[i])),
        )
    };
    let mut info = serde_json::json!({
        "data": data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "sentences": examples.len(),
        "seed": options.seed,
        "l2": options.l2,
        "epochs": options.epochs,
        "learning_rate": options.learning_rate,
        "class_weights": options.class_weights,
        "dev_fraction": training.dev_fraction,
    });
    let cv = match training.cv_folds {
        Some(k) => {
            let summary = cross_validate(examples, k, options.seed, observer, |train, test, _| {
                Ok((score("fold", &fit(train)?, test), None))
            })?;
            info["cv_by_text"] = summary.to_json();
            Some(summary)
        }
        None => None,
    };
    let (train_idx, dev_idx) = split_by_doc(examples, training.dev_fraction, options.seed);
    let mut head = fit(&train_idx)?;
    let dev = if dev_idx.is_empty() {
        None
    } else {
        let report = score("dev", &head, &dev_idx);
        let m = &report.metrics;
        info["dev"] = serde_json::json!({"sentences": dev_idx.len(), "accuracy": m.accuracy.value, "macro_f1": m.macro_f1.value});
        Some((dev_idx, report))
    };
    info["train_sentences"] = serde_json::json!(train_idx.len());
    head.spec.training = info;
    Ok(Trained {
        head,
        train_sentences: train_idx.len(),
        dev,
        cv,
    })
}

/// Scoring a saved head through the inference path, as `classify` runs it.
pub struct SavedHeadScoring<'a> {
    pub model_dir: &'a Path,
    pub engine: Engine,
    pub batch_size: usize,
}

impl SavedHeadScoring<'_> {
    /// The report of the head in `head_dir` on examples `idx`.
    pub fn score(
        &self,
        head_dir: &Path,
        name: &str,
        labels: &LabelSet,
        examples: &[Example],
        idx: &[usize],
    ) -> Result<SystemReport> {
        let dir = ModelDir::open(self.model_dir)?;
        let classifier = Classifier::with_head(&dir, head_dir, self.engine)?;
        let texts: Vec<&str> = idx.iter().map(|&i| examples[i].text.as_str()).collect();
        let previous: Vec<Option<&str>> = idx
            .iter()
            .map(|&i| examples[i].previous.as_deref())
            .collect();
        let options = RunOptions {
            batch_size: self.batch_size.max(1),
            allow_long: true,
        };
        let result = classifier.classify_units(&texts, &previous, &options, |_| {})?;
        Ok(score_examples(name, labels, examples, idx, result.scores))
    }
}

/// An encoder fine-tuned with its head.
#[derive(Debug, Clone)]
pub struct FineTuneTraining {
    pub options: FineTuneOptions,
    pub dev_fraction: f64,
    pub cv_folds: Option<usize>,
    /// How the saved result is loaded back to score it (the inference path).
    pub load: LoadOptions,
    /// Scratch space for the folds' models.
    pub scratch: PathBuf,
    /// Seed of the initialisation and example order when it differs from
    /// `options.seed`, which then only chooses the dev split and the folds:
    /// runs on one split that differ only here can be averaged
    /// (`mawqif average-heads`).
    pub run_seed: Option<u64>,
}

/// Fine-tune on `examples` and save the head and changed layers into `out`;
/// the dev report is computed through the saved files, as `classify` sees them.
pub fn train_fine_tuned(
    model_dir: &Path,
    examples: &[Example],
    data: &[PathBuf],
    training: &FineTuneTraining,
    out: &Path,
    observer: &mut dyn TrainObserver,
) -> Result<Trained> {
    let started = std::time::Instant::now();
    // One label set for every fold and the final model.
    let labels = label_set(examples, training.options.labels.as_ref())?;
    let split_seed = training.options.seed;
    let options = FineTuneOptions {
        labels: Some(labels.clone()),
        seed: training.run_seed.unwrap_or(split_seed),
        ..training.options.clone()
    };
    let o = &options;
    let mut info = serde_json::json!({
        "data": data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "sentences": examples.len(),
        "seed": split_seed,
        "fine_tune_layers": o.layers,
        "lr_encoder": o.lr_encoder,
        "lr_head": o.lr_head,
        "weight_decay": o.weight_decay,
        "dev_fraction": training.dev_fraction,
    });
    if let Some(run_seed) = training.run_seed {
        info["run_seed"] = serde_json::json!(run_seed);
    }
    if o.web_spelling > 0.0 {
        info["web_spelling"] = serde_json::json!(o.web_spelling);
    }
    let tune = |train: &[Example],
                dev: &[Example],
                observer: &mut dyn TrainObserver|
     -> Result<FineTuned> {
        fine_tune(model_dir, train, dev, o, |r| observer.epoch_done(r))
    };
    let score_saved = |head_dir: &Path, idx: &[usize]| -> Result<SystemReport> {
        let scoring = SavedHeadScoring {
            model_dir,
            engine: training.load.engine,
            batch_size: o.batch_size,
        };
        scoring.score(head_dir, "dev", &labels, examples, idx)
    };
    let cv = match training.cv_folds {
        Some(k) => {
            let scratch = &training.scratch;
            let result =
                cross_validate(examples, k, split_seed, observer, |rest, test, observer| {
                    // Early stopping uses texts from the training folds only.
                    let rest_ex = pick(examples, rest);
                    let (tr, dv) = split_by_doc(&rest_ex, 0.2, split_seed);
                    observer.note(&format!(
                        "fine-tuning on {} sentences, early stopping on {}",
                        tr.len(),
                        dv.len()
                    ));
                    let tuned = tune(&pick(&rest_ex, &tr), &pick(&rest_ex, &dv), observer)?;
                    save(&tuned, scratch)?;
                    Ok((score_saved(scratch, test)?, Some(tuned.best_epoch)))
                });
            let _ = std::fs::remove_dir_all(scratch);
            let summary = result?;
            info["cv_by_text"] = summary.to_json();
            Some(summary)
        }
        None => None,
    };
    let (train_idx, dev_idx) = split_by_doc(examples, training.dev_fraction, split_seed);
    observer.note(&format!(
        "fine-tuning {} layers on {} sentences ({} for early stopping)",
        o.layers,
        train_idx.len(),
        dev_idx.len()
    ));
    let mut tuned = tune(
        &pick(examples, &train_idx),
        &pick(examples, &dev_idx),
        observer,
    )?;
    info["best_epoch"] = serde_json::json!(tuned.best_epoch);
    info["train_sentences"] = serde_json::json!(train_idx.len());
    info["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
    tuned.head.spec.training = info;
    save(&tuned, out)?;
    let dev = if dev_idx.is_empty() {
        None
    } else {
        Some((dev_idx.clone(), score_saved(out, &dev_idx)?))
    };
    Ok(Trained {
        head: tuned.head,
        train_sentences: train_idx.len(),
        dev,
        cv,
    })
}

/// Runs averaged into one model, and how each did on their shared dev split.
pub struct AveragedRuns {
    pub head: Head,
    pub dev: Option<DevComparison>,
}

/// Dev reports of each run and of their average, on the same texts.
pub struct DevComparison {
    pub sentences: usize,
    pub runs: Vec<SystemReport>,
    pub average: SystemReport,
}

/// Average the saved runs in `run_dirs` (see [`super::average`]) and save
/// the result into `out`. With `examples` (the runs' training data), also
/// score every run and the average, through the inference path, on the dev
/// split the runs recorded (`seed`, `dev_fraction`), which none of them
/// trained on.
pub fn average_saved_runs(
    run_dirs: &[PathBuf],
    examples: Option<&[Example]>,
    scoring: &SavedHeadScoring,
    out: &Path,
    observer: &mut dyn TrainObserver,
) -> Result<AveragedRuns> {
    let runs = run_dirs
        .iter()
        .map(|d| TrainedRun::load(d))
        .collect::<Result<Vec<_>>>()?;
    let split = match examples {
        Some(examples) => Some((examples, recorded_dev_split(&runs, examples)?)),
        None => None,
    };
    let training = serde_json::json!({
        "average_of": runs.iter().map(|r| r.head.spec.training.clone()).collect::<Vec<_>>(),
        "runs": runs.len(),
    });
    let mut averaged = average_runs(&runs, training)?;
    let dev = match split {
        Some((examples, dev_idx)) => {
            let labels = averaged.head.spec.labels.clone();
            let mut reports = Vec::new();
            for (k, dir) in run_dirs.iter().enumerate() {
                observer.note(&format!(
                    "scoring run {} ({}) on the {} dev sentences",
                    k + 1,
                    dir.display(),
                    dev_idx.len()
                ));
                let name = format!("run {}", k + 1);
                reports.push(scoring.score(dir, &name, &labels, examples, &dev_idx)?);
            }
            averaged.save(out)?;
            observer.note("scoring the average");
            let average = scoring.score(out, "average", &labels, examples, &dev_idx)?;
            let m = &average.metrics;
            averaged.head.spec.training["dev"] = serde_json::json!({
                "sentences": dev_idx.len(),
                "accuracy": m.accuracy.value,
                "macro_f1": m.macro_f1.value,
                "runs_macro_f1": reports.iter().map(|r| r.metrics.macro_f1.value).collect::<Vec<_>>(),
            });
            Some(DevComparison {
                sentences: dev_idx.len(),
                runs: reports,
                average,
            })
        }
        None => None,
    };
    // Again with the dev scores in head.json (the tensors are unchanged).
    averaged.save(out)?;
    Ok(AveragedRuns {
        head: averaged.head,
        dev,
    })
}

/// The dev split every run recorded in its `head.json` (the same `seed`,
/// `dev_fraction` and sentence count), recomputed on `examples`.
fn recorded_dev_split(runs: &[TrainedRun], examples: &[Example]) -> Result<Vec<usize>> {
    let recorded = |run: &TrainedRun| {
        let t = &run.head.spec.training;
        (
            t["seed"].as_u64(),
            t["dev_fraction"].as_f64(),
            t["sentences"].as_u64(),
        )
    };
    let first = recorded(&runs[0]);
    let (Some(seed), Some(fraction), Some(sentences)) = first else {
        return Err(MawqifError::RunsNotAveragable(
            "run 1's head.json does not record its seed, dev_fraction and sentences, so its \
             dev split cannot be rebuilt; leave out --data"
                .into(),
        ));
    };
    if let Some(k) = runs.iter().position(|r| recorded(r) != first) {
        return Err(MawqifError::RunsNotAveragable(format!(
            "run {} was trained with another seed, dev fraction or data size than run 1, so \
             the runs share no dev split",
            k + 1
        )));
    }
    if sentences != examples.len() as u64 {
        return Err(MawqifError::RunsNotAveragable(format!(
            "the runs were trained on {sentences} sentences but --data has {}; give the data \
             they were trained on",
            examples.len()
        )));
    }
    if fraction <= 0.0 {
        return Err(MawqifError::RunsNotAveragable(
            "the runs held out no dev split (--dev-fraction 0); leave out --data".into(),
        ));
    }
    let dev = split_by_doc(examples, fraction, seed).1;
    if dev.is_empty() {
        return Err(MawqifError::RunsNotAveragable(
            "the runs' dev split holds no text of --data; leave out --data".into(),
        ));
    }
    Ok(dev)
}
