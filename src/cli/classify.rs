//! `mawqif classify` and `mawqif segment`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};

use mawqif::report::{write_units, LabelledUnit, OutputFormat, SegmentRecord};
use mawqif::text::input::read_text;
use mawqif::{classify_segments, RunOptions, Segmenter};

use super::Context;

#[derive(Args)]
pub struct ClassifyArgs {
    /// Text files; `-` or none reads stdin
    files: Vec<PathBuf>,
    /// Model directory, hub id (`org/name[@REV]`, downloaded on first use), or `cues`
    #[arg(long, default_value = mawqif::DEFAULT_MODEL_DIR)]
    model: String,
    /// Classifier head directory (default: the model's own head)
    #[arg(long)]
    head: Option<PathBuf>,
    /// Output format (default: table on a terminal, jsonl otherwise)
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Sentences per encoder forward pass
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// CPU threads for the encoder (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
    /// Truncate sentences of any length instead of refusing very long ones
    #[arg(long)]
    allow_long: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Jsonl,
    Tsv,
    Table,
    /// CLEF CheckThat! TSV: sentence_id, sentence, label
    Checkthat,
}

pub fn classify(ctx: &Context, args: ClassifyArgs) -> Result<()> {
    super::init_threads(args.threads)?;
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let format = match args.format {
        Some(FormatArg::Jsonl) => OutputFormat::Jsonl,
        Some(FormatArg::Tsv) => OutputFormat::Tsv,
        Some(FormatArg::Table) => OutputFormat::Table,
        Some(FormatArg::Checkthat) => OutputFormat::CheckThat,
        None if std::io::stdout().is_terminal() => OutputFormat::Table,
        None => OutputFormat::Jsonl,
    };
    let files = super::input_files(args.files);
    // Read and check every input before loading the model: bad input fails fast.
    let mut texts = Vec::new();
    for f in &files {
        texts.push((f.display().to_string(), read_text(f)?));
    }
    let classifier = super::load_classifier(ctx, &args.model, args.head.as_deref())?;
    let options = RunOptions {
        batch_size: args.batch_size,
        allow_long: args.allow_long,
    };
    // Segment once: the counts size the progress bar, the units get labelled.
    let seg = Segmenter::new();
    let segmented: Vec<(String, Vec<_>)> = texts
        .into_iter()
        .map(|(name, t)| (name, seg.segment(&t)))
        .collect();
    let total: usize = segmented.iter().map(|(_, s)| s.len()).sum();
    let bar = super::progress(total, "classifying");
    let mut all: Vec<LabelledUnit> = Vec::new();
    for (name, segments) in &segmented {
        let (units, warnings) =
            classify_segments(name, segments, &classifier, &options, |n| bar.inc(n as u64))
                .with_context(|| format!("classifying {name}"))?;
        for w in warnings {
            bar.suspend(|| eprintln!("warning: {name}: {w}"));
        }
        if units.is_empty() {
            bar.suspend(|| eprintln!("warning: {name}: no sentence with Arabic text found"));
        }
        all.extend(units);
    }
    bar.finish_and_clear();
    let mut out = super::out();
    write_units(&mut out, &all, format)?;
    out.flush()?;
    Ok(())
}

pub fn segment(files: Vec<PathBuf>) -> Result<()> {
    let seg = Segmenter::new();
    let mut out = super::out();
    for f in super::input_files(files) {
        let text = read_text(&f)?;
        for s in seg.segment(&text) {
            let rec = SegmentRecord {
                file: f.display().to_string(),
                index: s.index,
                start: s.start,
                end: s.end,
                text: s.text,
            };
            // Through a string: a serde_json error would hide the closed-stdout marker.
            writeln!(out, "{}", serde_json::to_string(&rec)?)?;
        }
    }
    out.flush()?;
    Ok(())
}
