//! `mawqif train`: embed labelled sentences (cached), fit a head, report.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use indicatif::ProgressBar;

use mawqif::eval::SystemReport;
use mawqif::train::recipe::{count_texts, FoldResult};
use mawqif::train::{
    label_set, load_examples, train_fine_tuned, train_frozen, Example, FineTuneOptions,
    FineTuneTraining, FrozenTraining, HeadKind, TrainObserver, TrainOptions, Trained,
    ENCODER_OVERRIDE_FILE,
};
use mawqif::{Embedder, LabelSet};

use super::Context;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
mawqif train --data eval/train/gold --out /tmp/head            # 20% of texts held out as dev\n  \
mawqif train --data eval/train/gold --cv-by-text 5 --out /tmp/head\n  \
mawqif train --data eval/train/gold --dev-fraction 0 --out models/heads/multilingual-e5-small\n  \
mawqif train --data train_ar.tsv --dev-fraction 0 --out /tmp/subj-head   # CheckThat! TSV, SUBJ/OBJ\n\n\
The head learns the labels of the data (any scheme of two or more labels; the four stance\n\
labels in their order when the data has only those), or exactly --labels.\n\
Files under eval/fixtures/ are refused: they are held-out evaluation data.")]
pub struct TrainArgs {
    /// Gold files (JSONL, or CheckThat! `*.tsv`) or directories of them (repeatable)
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// The head's labels in output order, comma-separated (default: the labels of the data)
    #[arg(long, value_name = "A,B,...")]
    labels: Option<String>,
    /// Encoder: a model directory or a hub id (`org/name[@REV]`, downloaded on first use)
    #[arg(long = "model", default_value = mawqif::DEFAULT_MODEL_DIR)]
    model_spec: String,
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
    /// Also give the head the previous unit's cue features
    #[arg(long)]
    context: bool,
    /// Also give the head the previous unit's sentence vector (no extra
    /// encoder time at inference: every unit is encoded anyway)
    #[arg(long)]
    context_embedding: bool,
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
    /// Under --fine-tune: seed of the initialisation and example order only,
    /// --seed still choosing the split (runs that differ only here can be
    /// combined by `mawqif average-heads`)
    #[arg(long)]
    run_seed: Option<u64>,
    /// Share of texts held out as the dev split (0 trains on everything)
    #[arg(long, default_value_t = 0.2)]
    dev_fraction: f64,
    /// Also report K-fold cross-validation grouped by text
    #[arg(long)]
    cv_by_text: Option<usize>,
    /// Fine-tune the encoder with the head (LoRA updates on every linear layer,
    /// biases and layer norms; early stopping on the dev split); only the
    /// changes are stored, beside the head
    #[arg(long)]
    fine_tune: bool,
    /// How many top encoder layers --fine-tune trains (default: all)
    #[arg(long, default_value_t = 12)]
    fine_tune_layers: usize,
    /// Most epochs of --fine-tune (fewer when the dev score stops improving)
    #[arg(long, default_value_t = 4)]
    fine_tune_epochs: usize,
    /// Rank of the LoRA updates under --fine-tune
    #[arg(long, default_value_t = 16)]
    lora_rank: usize,
    /// LoRA scale numerator α (update = α / rank · B·A)
    #[arg(long, default_value_t = 32.0)]
    lora_alpha: f32,
    /// Peak AdamW learning rate of the encoder's tensors under --fine-tune
    #[arg(long, default_value_t = 5e-4)]
    lr_encoder: f64,
    /// AdamW learning rate of the head under --fine-tune
    #[arg(long, default_value_t = 1e-3)]
    lr_head: f64,
    /// AdamW weight decay under --fine-tune
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Under --fine-tune: share of the training units (0 to 1) rewritten in
    /// the spellings of web text (bare alef, final ى and ه, Arabic-Indic
    /// digits, Latin punctuation), so labels do not hang on careful spelling
    #[arg(long, default_value_t = 0.0)]
    web_spelling: f64,
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

/// Progress and log lines of a training run, on stderr.
struct Console {
    bar: Option<ProgressBar>,
}

impl TrainObserver for Console {
    fn embedding(&mut self, missing: usize, total: usize, cache: &Path) {
        let bar = super::progress(missing, "embedding");
        bar.suspend(|| {
            eprintln!(
                "embedding {missing} of {total} sentences (cache: {})",
                cache.display()
            )
        });
        self.bar = Some(bar);
    }

    fn embedded(&mut self, sentences: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(sentences as u64);
        }
    }

    fn note(&mut self, text: &str) {
        eprintln!("{text}");
    }

    fn epoch_done(&mut self, r: &mawqif::train::finetune::EpochReport) {
        let loss = if r.train_loss.is_nan() {
            "-".to_string()
        } else {
            format!("{:.4}", r.train_loss)
        };
        match r.dev_macro_f1 {
            Some(f1) => eprintln!(
                "  epoch {}: train loss {loss}, dev macro-F1 {f1:.3} ({:.0}s)",
                r.epoch, r.seconds
            ),
            None => eprintln!("  epoch {}: train loss {loss} ({:.0}s)", r.epoch, r.seconds),
        }
    }

    fn fold_done(&mut self, f: &FoldResult) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let extra = f
            .best_epoch
            .map(|e| format!(" (best epoch {e})"))
            .unwrap_or_default();
        eprintln!(
            "fold {}: {} sentences, accuracy {:.3}, macro-F1 {:.3}{extra}",
            f.fold, f.sentences, f.accuracy, f.macro_f1
        );
    }
}

impl Console {
    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

pub fn run(ctx: &Context, args: TrainArgs) -> Result<()> {
    super::init_threads(args.threads)?;
    if !(0.0..1.0).contains(&args.dev_fraction) {
        bail!("--dev-fraction must be in [0, 1)");
    }
    if args.cv_by_text.is_some_and(|k| k < 2) {
        bail!("--cv-by-text needs K >= 2");
    }
    if !(0.0..=1.0).contains(&args.web_spelling) {
        bail!("--web-spelling is a share of the training units, in [0, 1]");
    }
    if args.web_spelling > 0.0 && !args.fine_tune {
        bail!("--web-spelling applies to --fine-tune only (a frozen head's vectors are cached per sentence)");
    }
    if args.run_seed.is_some() && !args.fine_tune {
        bail!("--run-seed applies to --fine-tune only (a frozen head's --seed sets everything)");
    }
    let examples = load_examples(&args.data)?;
    if examples.is_empty() {
        bail!("no labelled sentences in {:?}", args.data);
    }
    let given = match &args.labels {
        Some(list) => Some(LabelSet::parse(list).with_context(|| format!("--labels {list}"))?),
        None => None,
    };
    let labels = label_set(&examples, given.as_ref())?;
    if !labels.is_stance() {
        eprintln!(
            "labels: {}",
            labels
                .labels()
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // After the data checks: a bad data file should not wait for a download.
    let model = super::hub::resolve_model_dir(ctx, &args.model_spec)?;
    let mut console = Console { bar: None };
    if args.fine_tune {
        return run_fine_tune(ctx, &args, &model, &examples, labels, &mut console);
    }
    let embedder = Embedder::open(&model, ctx.engine)
        .with_context(|| format!("loading model {}", model.display()))?;
    let started = std::time::Instant::now();
    let training = FrozenTraining {
        options: TrainOptions {
            kind: match args.head_type {
                HeadTypeArg::Softmax => HeadKind::Softmax,
                HeadTypeArg::Mlp => HeadKind::Mlp {
                    hidden: args.hidden.max(1),
                },
            },
            l2: args.l2,
            epochs: args.epochs,
            learning_rate: args.lr,
            class_weights: !args.no_class_weights,
            seed: args.seed,
            labels: Some(labels),
        },
        cues: !args.no_cues,
        context: args.context,
        context_embedding: args.context_embedding,
        dev_fraction: args.dev_fraction,
        cv_folds: args.cv_by_text,
        batch_size: args.batch_size.max(1),
        cache_root: ctx.cache_root.clone(),
    };
    let trained = train_frozen(&embedder, &examples, &args.data, &training, &mut console)?;
    console.finish();
    // A closed stdout must not cost the trained head: save it, then report.
    let printed = print_results(&examples, &trained, "");
    trained
        .head
        .save(&args.out)
        .with_context(|| format!("writing head to {}", args.out.display()))?;
    eprintln!(
        "wrote {}/head.safetensors and head.json ({} training sentences, {:.1}s)",
        args.out.display(),
        trained.train_sentences,
        started.elapsed().as_secs_f64()
    );
    Ok(printed?)
}

/// The cross-validation summary and the dev report, on stdout.
fn print_results(examples: &[Example], trained: &Trained, what: &str) -> std::io::Result<()> {
    let mut out = super::out();
    if let Some(cv) = &trained.cv {
        writeln!(
            out,
            "cross-validation by text ({} folds{what}): macro-F1 {:.3} ± {:.3}",
            cv.folds.len(),
            cv.macro_f1_mean,
            cv.macro_f1_std
        )?;
    }
    let Some((dev_idx, report)) = &trained.dev else {
        return out.flush();
    };
    let m = &report.metrics;
    if what.is_empty() {
        writeln!(
            out,
            "dev split ({} sentences in {} texts): accuracy {:.3} [{:.3}–{:.3}], lenient {:.3}, macro-F1 {:.3} [{:.3}–{:.3}], kappa {:.3}",
            dev_idx.len(),
            count_texts(examples, dev_idx),
            m.accuracy.value,
            m.accuracy.low,
            m.accuracy.high,
            m.lenient_accuracy,
            m.macro_f1.value,
            m.macro_f1.low,
            m.macro_f1.high,
            m.kappa
        )?;
        print_per_class(&mut out, report)?;
    } else {
        writeln!(
            out,
            "dev split ({} sentences, inference path): accuracy {:.3}, lenient {:.3}, macro-F1 {:.3} [{:.3}–{:.3}]",
            dev_idx.len(),
            m.accuracy.value,
            m.lenient_accuracy,
            m.macro_f1.value,
            m.macro_f1.low,
            m.macro_f1.high
        )?;
    }
    out.flush()
}

fn print_per_class(out: &mut impl Write, report: &SystemReport) -> std::io::Result<()> {
    for l in &report.metrics.labels {
        let Some(c) = report.metrics.per_class.get(l.as_str()) else {
            continue;
        };
        writeln!(
            out,
            "  {:<12} P {:.3} R {:.3} F1 {:.3} (n={})",
            l.as_str(),
            c.precision,
            c.recall,
            c.f1,
            c.support
        )?;
    }
    Ok(())
}

fn run_fine_tune(
    ctx: &Context,
    args: &TrainArgs,
    model: &Path,
    examples: &[Example],
    labels: LabelSet,
    console: &mut Console,
) -> Result<()> {
    let started = std::time::Instant::now();
    let training = FineTuneTraining {
        options: FineTuneOptions {
            layers: args.fine_tune_layers.max(1),
            max_epochs: args.fine_tune_epochs.max(1),
            lr_encoder: args.lr_encoder,
            lr_head: args.lr_head,
            weight_decay: args.weight_decay,
            batch_size: args.batch_size.max(1),
            seed: args.seed,
            cues: !args.no_cues,
            context: args.context,
            context_embedding: args.context_embedding,
            rank: args.lora_rank.max(1),
            alpha: args.lora_alpha,
            labels: Some(labels),
            web_spelling: args.web_spelling,
            ..FineTuneOptions::default()
        },
        dev_fraction: args.dev_fraction,
        cv_folds: args.cv_by_text,
        load: ctx.load_options(),
        scratch: std::env::temp_dir().join(format!("mawqif-cv-{}", std::process::id())),
        run_seed: args.run_seed,
    };
    let trained = train_fine_tuned(model, examples, &args.data, &training, &args.out, console)?;
    let printed = print_results(examples, &trained, ", fine-tuned");
    eprintln!(
        "wrote {} (head + {ENCODER_OVERRIDE_FILE} of the top layers, best epoch {}) in {:.0}s",
        args.out.display(),
        trained.head.spec.training["best_epoch"],
        started.elapsed().as_secs_f64()
    );
    Ok(printed?)
}
