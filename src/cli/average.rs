//! `mawqif average-heads`: merge fine-tuned runs into one head.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use mawqif::train::{average_saved_runs, load_examples, SavedHeadScoring, TrainObserver};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  mawqif train --data eval/train/gold --fine-tune --dev-fraction 0.1 --run-seed 13 --out /tmp/r13
  mawqif train --data eval/train/gold --fine-tune --dev-fraction 0.1 --run-seed 14 --out /tmp/r14
  mawqif average-heads /tmp/r13 /tmp/r14 --data eval/train/gold --out /tmp/avg

The runs must differ only in --run-seed: same data, --seed (so the same dev split),
layers and labels. LoRA updates are stacked, so the result stores n times their
rank (n × 2.9 MB for e5-small) but runs exactly as fast: it is merged at load.
With --data (the runs' training data), each run and the average are scored on
the dev split the runs held out.")]
pub struct AverageArgs {
    /// Head directories written by `mawqif train` (two or more)
    #[arg(required = true, num_args = 2..)]
    runs: Vec<PathBuf>,
    /// Where to write the averaged head (and its encoder override)
    #[arg(long)]
    out: PathBuf,
    /// The runs' training data: score every run and the average on their dev split
    #[arg(long)]
    data: Vec<PathBuf>,
    /// Encoder the runs were trained on (a model directory or a hub id)
    #[arg(long = "model", default_value = mawqif::DEFAULT_MODEL_DIR)]
    model_spec: String,
    /// Sentences per encoder forward pass while scoring
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// CPU threads for the encoder
    #[arg(long)]
    threads: Option<usize>,
}

struct Notes;
impl TrainObserver for Notes {
    fn note(&mut self, text: &str) {
        eprintln!("{text}");
    }
}

pub fn run(ctx: &super::Context, args: AverageArgs) -> Result<()> {
    super::init_threads(args.threads)?;
    if args.runs.iter().any(|r| r == &args.out) {
        bail!("--out must be a new directory, not one of the runs");
    }
    let examples = if args.data.is_empty() {
        None
    } else {
        Some(load_examples(&args.data)?)
    };
    let model = super::hub::resolve_model_dir(ctx, &args.model_spec)?;
    let scoring = SavedHeadScoring {
        model_dir: &model,
        engine: ctx.engine,
        batch_size: args.batch_size,
    };
    let averaged = average_saved_runs(
        &args.runs,
        examples.as_deref(),
        &scoring,
        &args.out,
        &mut Notes,
    )?;
    let mut out = super::out();
    if let Some(dev) = &averaged.dev {
        writeln!(out, "dev split ({} sentences), macro-F1:", dev.sentences)?;
        for (dir, report) in args.runs.iter().zip(&dev.runs) {
            let m = &report.metrics;
            writeln!(
                out,
                "  {:<40} {:.3} [{:.3}–{:.3}]  accuracy {:.3}",
                dir.display(),
                m.macro_f1.value,
                m.macro_f1.low,
                m.macro_f1.high,
                m.accuracy.value
            )?;
        }
        let m = &dev.average.metrics;
        writeln!(
            out,
            "  {:<40} {:.3} [{:.3}–{:.3}]  accuracy {:.3}",
            "average", m.macro_f1.value, m.macro_f1.low, m.macro_f1.high, m.accuracy.value
        )?;
    }
    out.flush()?;
    eprintln!(
        "wrote {} (the average of {} runs)",
        args.out.display(),
        args.runs.len()
    );
    Ok(())
}
