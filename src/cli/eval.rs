//! `mawqif eval`: argument parsing and output; the scoring lives in the library.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};

use mawqif::eval::gold::previous_in_document;
use mawqif::eval::scoreboard::System;
use mawqif::eval::{
    build_report, majority_label, predictions_for_gold, read_gold, read_predictions, GoldFormat,
    BOOTSTRAP_SEED,
};
use mawqif::text::input::read_text;
use mawqif::{Classifier, LabelMap, LabelSet, RunOptions, Scores};

use super::Context;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
mawqif eval --gold eval/fixtures/article.gold.jsonl --model cues --model majority\n  \
mawqif eval --gold eval/fixtures/article.gold.jsonl --model models/multilingual-e5-small --errors\n  \
mawqif classify --format jsonl eval/fixtures/article.txt > pred.jsonl\n  \
mawqif eval --gold eval/fixtures/article.gold.jsonl --pred pred.jsonl --format markdown\n  \
mawqif eval --gold my.tsv --gold-format checkthat --model cues\n  \
mawqif eval --gold dev_test_ar.tsv --gold-format checkthat --pred submission.tsv\n  \
mawqif eval --gold dev_test_ar.tsv --gold-format checkthat --model models/multilingual-e5-small \\\n    \
--map report=OBJ,quotation=OBJ,endorsement=SUBJ,opinion=SUBJ\n\n\
Each --pred and --model adds a column. Gold JSONL spans are matched to predictions by span;\n\
CheckThat! TSV by sentence_id (any string ids; three columns, or the lab's two-column\n\
submission sentence_id<TAB>label for --pred). Labels are any names: the scheme is the gold's.\n\
The `cues` baseline is computed for reference when the gold speaks the stance scheme\n\
(or what --map makes of it).")]
pub struct EvalArgs {
    /// Gold labels (JSONL with id/start/end/text/label/alt, or CheckThat! TSV)
    #[arg(long)]
    gold: PathBuf,
    /// Layout of the gold file (and of --pred files)
    #[arg(long, value_enum, default_value = "jsonl")]
    gold_format: GoldFormatArg,
    /// Source text the gold spans point into (default: GOLD with .gold.jsonl → .txt, if present)
    #[arg(long)]
    text: Option<PathBuf>,
    /// A prediction file (`mawqif classify --format jsonl` output); repeatable
    #[arg(long)]
    pred: Vec<PathBuf>,
    /// A model directory, `cues` or `majority`, run on the gold sentences; repeatable
    #[arg(long)]
    model: Vec<String>,
    /// Classifier head for every --model directory (default: each model's own head)
    #[arg(long)]
    head: Option<PathBuf>,
    /// Output format (default: table)
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
    /// List each misclassified sentence with gold, prediction and score
    #[arg(long)]
    errors: bool,
    /// Rename predicted labels before scoring: FROM=TO pairs, comma-separated
    /// (e.g. report=OBJ,quotation=OBJ,endorsement=SUBJ,opinion=SUBJ), or a
    /// file of such pairs, one a line
    #[arg(long, value_name = "MAP")]
    map: Option<String>,
    /// Seed of the bootstrap resampling
    #[arg(long, default_value_t = BOOTSTRAP_SEED)]
    seed: u64,
    /// Sentences per encoder forward pass
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// CPU threads for the encoder
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum GoldFormatArg {
    Jsonl,
    Checkthat,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Table,
    Json,
    Markdown,
}

fn default_source(gold: &Path) -> Option<PathBuf> {
    let name = gold.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gold.jsonl")?;
    let candidate = gold.with_file_name(format!("{stem}.txt"));
    candidate.is_file().then_some(candidate)
}

pub fn run(ctx: &Context, args: EvalArgs) -> Result<()> {
    super::init_threads(args.threads)?;
    if args.pred.is_empty() && args.model.is_empty() {
        bail!("nothing to score: give at least one --pred FILE or --model DIR|cues|majority");
    }
    let format = match args.gold_format {
        GoldFormatArg::Jsonl => GoldFormat::Jsonl,
        GoldFormatArg::Checkthat => GoldFormat::CheckThat,
    };
    let gold = read_gold(&args.gold, format)?;
    let map = match &args.map {
        Some(spec) => Some(LabelMap::from_arg(spec).with_context(|| format!("--map {spec}"))?),
        None => None,
    };
    let source = match args.text.clone().or_else(|| default_source(&args.gold)) {
        Some(p) if format == GoldFormat::Jsonl => Some(read_text(&p)?),
        _ => None,
    };
    let mut classifiers: Vec<(String, Classifier)> = Vec::new();
    for m in &args.model {
        let c = match m.as_str() {
            "majority" => {
                let labels = LabelSet::covering(gold.iter().map(|g| &g.label))
                    .context("`majority` needs gold with at least two labels")?;
                let label = majority_label(&gold, labels.labels())
                    .context("`majority` needs a non-empty gold set")?;
                Classifier::Constant(Scores::certain(&labels, &label))
            }
            other => super::load_classifier(ctx, other, args.head.as_deref())?,
        };
        let name = match m.as_str() {
            "majority" | "cues" => m.clone(),
            _ => c.name(),
        };
        classifiers.push((name, c));
    }
    let neural = classifiers
        .iter()
        .filter(|(_, c)| matches!(c, Classifier::Neural { .. }))
        .count();
    let bar = super::progress(neural * gold.len(), "evaluating");
    let options = RunOptions {
        batch_size: args.batch_size.max(1),
        allow_long: true,
    };
    let in_context =
        |e: anyhow::Error| e.context(format!("evaluating against {}", args.gold.display()));
    let mut systems = Vec::new();
    for path in &args.pred {
        systems.push(System {
            name: path.display().to_string(),
            predictions: read_predictions(path, format).map_err(|e| in_context(e.into()))?,
            from: path.clone(),
        });
    }
    let texts: Vec<&str> = gold.iter().map(|g| g.text.as_str()).collect();
    let previous = previous_in_document(&gold);
    for (name, classifier) in &classifiers {
        let result = classifier
            .classify_units(&texts, &previous, &options, |n| bar.inc(n as u64))
            .map_err(|e| in_context(e.into()))?;
        systems.push(System {
            name: name.clone(),
            predictions: predictions_for_gold(&gold, result.scores),
            from: args.gold.clone(),
        });
    }
    let report = build_report(
        &args.gold,
        &gold,
        source.as_deref(),
        &systems,
        map.as_ref(),
        args.seed,
    )
    .map_err(|e| in_context(e.into()))?;
    bar.finish_and_clear();
    let text = match args.format {
        ReportFormat::Table => report.to_table(args.errors),
        ReportFormat::Json => report.to_json() + "\n",
        ReportFormat::Markdown => report.to_markdown(args.errors),
    };
    let mut out = super::out();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
