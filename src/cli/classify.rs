//! `mawqif classify` and `mawqif segment`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};

use mawqif::archive::stream::{self, DocInfo, Sink, StreamError, Streamer};
use mawqif::archive::{documents, InputFormat, RecordFields, ResumableOutput, Shard};
use mawqif::report::{ArticleProfile, LabelledUnit, OutputFormat, SegmentRecord, UnitWriter};
use mawqif::text::input::read_text;
use mawqif::{LabelMap, RunOptions, Segmenter};

use super::Context;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
mawqif classify eval/fixtures/article.txt\n  \
mawqif classify --format jsonl news/*.txt > labels.jsonl\n  \
mawqif classify --input jsonl --id-field url --text-field body corpus.jsonl > units.jsonl\n  \
mawqif classify --input csv --keep-fields outlet,date export.csv\n  \
mawqif classify --input jsonl --shard 0/4 corpus.jsonl > part0.jsonl   # one of 4 processes\n  \
mawqif classify --input jsonl corpus.jsonl --resume units.jsonl        # continues a killed run\n  \
mawqif classify --summary news/*.txt                                  # one profile per text\n  \
mawqif classify --model cues article.txt                              # the rule baseline\n  \
mawqif classify --input checkthat --head /tmp/subj-head dev_test_ar.tsv > task1_mono_arabic.tsv\n  \
mawqif classify --map report=OBJ,quotation=OBJ,endorsement=SUBJ,opinion=SUBJ --input checkthat x.tsv\n\n\
--input checkthat reads a CLEF CheckThat! TSV (header sentence_id<TAB>sentence[<TAB>label]),\n\
classifies each row as one sentence and writes the submission sentence_id<TAB>label.\n\
Output streams in input order as batches finish. A bad file or record is reported on\n\
stderr and the run goes on; the exit status is then 1 (0 when every input was read).\n\
--fail-fast stops at the first bad input instead. A closed pipe (| head) ends the run\n\
quietly with status 0.")]
pub struct ClassifyArgs {
    /// Input files; `-` or none reads stdin
    files: Vec<PathBuf>,
    /// How inputs are read: each text file is one text, or one record per
    /// JSONL line / CSV row, or one sentence per CheckThat! TSV row
    #[arg(long, value_enum, default_value = "text")]
    input: InputArg,
    /// Record field holding the id (default: id; sentence_id for checkthat)
    #[arg(long)]
    id_field: Option<String>,
    /// Record field holding the text (default: text; sentence for checkthat)
    #[arg(long)]
    text_field: Option<String>,
    /// Record fields copied into every output unit, comma-separated
    #[arg(long, value_delimiter = ',')]
    keep_fields: Vec<String>,
    /// Model directory, hub id (`org/name[@REV]`, downloaded on first use), or `cues`
    #[arg(long, default_value = mawqif::DEFAULT_MODEL_DIR)]
    model: String,
    /// Classifier head directory (default: the model's own head)
    #[arg(long)]
    head: Option<PathBuf>,
    /// Output format (default: submission for --input checkthat; else table
    /// on a terminal, jsonl otherwise)
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Rename predicted labels before output: FROM=TO pairs, comma-separated
    /// (e.g. report=OBJ,quotation=OBJ,endorsement=SUBJ,opinion=SUBJ), or a
    /// file of such pairs, one a line; merged labels' scores are summed
    #[arg(long, value_name = "MAP")]
    map: Option<String>,
    /// Write one article profile per text or record (JSONL, schema
    /// mawqif-profile/1) instead of the units
    #[arg(long)]
    summary: bool,
    /// Take only shard K of N (K from 0): a stable hash of each record id (or
    /// file name) picks its shard, so N processes split one corpus
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// Write JSONL to OUT and continue where a killed run with the same OUT
    /// stopped (completed texts are skipped; a half-written one is redone)
    #[arg(long, value_name = "OUT")]
    resume: Option<PathBuf>,
    /// Stop at the first bad input (exit 1) instead of reporting it and going on
    #[arg(long)]
    fail_fast: bool,
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
    /// One JSON object per sentence, with every label's probability
    Jsonl,
    /// file, index, start, end, label, score, text
    Tsv,
    /// For people: label and p per sentence, `?` where p < 0.90 (check those by hand)
    Table,
    /// CLEF CheckThat! TSV: sentence_id, sentence, label
    Checkthat,
    /// CLEF CheckThat! submission: sentence_id, label
    Submission,
}

#[derive(Clone, Copy, ValueEnum)]
enum InputArg {
    Text,
    Jsonl,
    Csv,
    Checkthat,
}

/// Sentences per classification call: enough for full encoder batches,
/// few enough that the first lines come out within seconds.
const STREAM_CHUNK: usize = 128;

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
        Some(FormatArg::Submission) => OutputFormat::Submission,
        None if args.summary || args.resume.is_some() => OutputFormat::Jsonl,
        None if matches!(args.input, InputArg::Checkthat) => OutputFormat::Submission,
        None if std::io::stdout().is_terminal() => OutputFormat::Table,
        None => OutputFormat::Jsonl,
    };
    if (args.summary || args.resume.is_some()) && format != OutputFormat::Jsonl {
        bail!("--summary and --resume write JSONL; drop --format or use --format jsonl");
    }
    let shard = match &args.shard {
        Some(s) => Some(Shard::parse(s).with_context(|| {
            format!("--shard {s}: expected K/N with 0 <= K < N, e.g. --shard 0/4")
        })?),
        None => None,
    };
    let input = match args.input {
        InputArg::Text => InputFormat::Text,
        InputArg::Jsonl => InputFormat::Jsonl,
        InputArg::Csv => InputFormat::Csv,
        InputArg::Checkthat => InputFormat::CheckThat,
    };
    let (id_default, text_default) = match input {
        InputFormat::CheckThat => ("sentence_id", "sentence"),
        _ => ("id", "text"),
    };
    let fields = RecordFields {
        id: args.id_field.clone().unwrap_or_else(|| id_default.into()),
        text: args
            .text_field
            .clone()
            .unwrap_or_else(|| text_default.into()),
        keep: args.keep_fields.clone(),
    };
    let map = match &args.map {
        Some(spec) => Some(LabelMap::from_arg(spec).with_context(|| format!("--map {spec}"))?),
        None => None,
    };
    let files = super::input_files(args.files.clone());
    let resumable = match &args.resume {
        Some(out) => Some(ResumableOutput::open(out)?),
        None => None,
    };
    let classifier = super::load_classifier(ctx, &args.model, args.head.as_deref())?;
    let options = RunOptions {
        batch_size: args.batch_size,
        allow_long: args.allow_long,
    };
    let total_bytes: Option<u64> = files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len())
        })
        .sum();
    let bar = super::progress_bar(
        total_bytes.unwrap_or(0),
        "{msg} [{bar:30}] {percent}% ({elapsed}, eta {eta})",
    );
    if total_bytes.is_none() {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
    }
    let started = std::time::Instant::now();
    let skipped = std::cell::Cell::new(0usize);
    let done = resumable
        .as_ref()
        .map(ResumableOutput::done_keys)
        .unwrap_or_default();
    let items = files
        .iter()
        .flat_map(|f| documents(f, input, &fields))
        .filter(|item| {
            let key = match item {
                Ok(doc) => doc.key(),
                // A failure is reported whatever its shard: it is still a bad input.
                Err(_) => return true,
            };
            let keep = shard.is_none_or(|s| s.contains(key)) && !done.contains(key);
            if !keep {
                skipped.set(skipped.get() + 1);
            }
            keep
        });
    let mut streamer = Streamer::new(&classifier, options, STREAM_CHUNK, args.summary)
        .whole_documents(input.is_sentence_per_record());
    if let Some(map) = map {
        streamer = streamer.with_map(map)?;
    }
    let mut failures = 0usize;
    let mut sink = OutputSink {
        out: match resumable {
            Some(r) => Output::Resume(r),
            None => Output::Stdout(super::out()),
        },
        writer: UnitWriter::new(format, files.len() > 1 || input != InputFormat::Text)
            .record_is_sentence(input.is_sentence_per_record()),
        summary: args.summary,
        bar: &bar,
        started,
        sentences: 0,
        documents: 0,
    };
    let run = sink.start().map_err(StreamError::Sink).and_then(|()| {
        stream::run(&mut streamer, items, &mut sink, |failure| {
            failures += 1;
            bar.suspend(|| eprintln!("error: {failure}"));
            !args.fail_fast
        })
    });
    let flushed = sink.out.flush();
    bar.finish_and_clear();
    match run {
        Ok(_) => {}
        // The failure itself was reported as it happened.
        Err(StreamError::Input(_)) => bail!(
            "stopped at the first bad input (--fail-fast); {} texts before it were classified",
            streamer.documents()
        ),
        Err(StreamError::Model(e)) => return Err((*e).into()),
        Err(StreamError::Sink(e)) => return Err(e.into()),
    }
    flushed?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "classified {} texts ({} sentences) in {seconds:.1}s{}{}",
        streamer.documents(),
        streamer.sentences(),
        match skipped.get() {
            0 => String::new(),
            n => format!("; {n} skipped (other shards or already done)"),
        },
        match failures {
            0 => String::new(),
            1 => "; 1 input failed".to_string(),
            n => format!("; {n} inputs failed"),
        }
    );
    if failures > 0 {
        bail!("{failures} of the inputs could not be classified (see the errors above)");
    }
    Ok(())
}

/// Standard output, or a resumable output file.
enum Output {
    Stdout(super::Out),
    Resume(ResumableOutput),
}

impl Output {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(out) => out,
            Output::Resume(r) => r.writer(),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

/// Writes units (or profiles) as the stream produces them; records each
/// completed text in the resume log.
struct OutputSink<'b> {
    out: Output,
    writer: UnitWriter,
    summary: bool,
    bar: &'b indicatif::ProgressBar,
    started: std::time::Instant,
    sentences: usize,
    documents: usize,
}

impl OutputSink<'_> {
    fn start(&mut self) -> std::io::Result<()> {
        if self.summary {
            return Ok(());
        }
        self.writer.start(self.out.writer())
    }

    fn show(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        self.bar.set_message(format!(
            "{} texts, {} sentences ({:.1} texts/s, {:.0} sentences/s)",
            self.documents,
            self.sentences,
            self.documents as f64 / secs,
            self.sentences as f64 / secs
        ));
    }
}

impl Sink for OutputSink<'_> {
    type Error = std::io::Error;

    fn begin(&mut self, doc: &DocInfo) -> std::io::Result<()> {
        if !self.summary && doc.sentences > 0 {
            self.writer.begin_text(self.out.writer())?;
        }
        Ok(())
    }

    fn unit(&mut self, _doc: &DocInfo, unit: &LabelledUnit) -> std::io::Result<()> {
        self.sentences += 1;
        if self.summary {
            return Ok(());
        }
        self.writer.unit(self.out.writer(), unit)
    }

    fn end(&mut self, doc: &DocInfo, profile: &ArticleProfile) -> std::io::Result<()> {
        self.documents += 1;
        let out = self.out.writer();
        if self.summary {
            writeln!(out, "{}", serde_json::to_string(profile)?)?;
        } else if doc.sentences > 0 {
            self.writer.end_text(out, doc.key())?;
        }
        if let Output::Resume(r) = &mut self.out {
            r.commit(doc.key()).map_err(std::io::Error::other)?;
        }
        self.bar.inc(doc.bytes as u64);
        self.show();
        Ok(())
    }

    fn batch_done(&mut self) -> std::io::Result<()> {
        self.show();
        self.out.flush()
    }

    fn warning(&mut self, doc: &DocInfo, message: &str) -> std::io::Result<()> {
        self.bar
            .suspend(|| eprintln!("warning: {}: {message}", doc.key()));
        Ok(())
    }
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
