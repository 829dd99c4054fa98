//! `mawqif download`, `mawqif models`, and `--model` values that name hub models.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use indicatif::ProgressBar;

use mawqif::hub::{cached_snapshot, Hub, HubModelRef, Snapshot};
use mawqif::model::registry::Registry;
use mawqif::model::resolve::{default_hub_model, hub_ref};
use mawqif::model::resolve_model;

use super::Context;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
mawqif download aubmindlab/bert-base-arabertv02\n  \
mawqif download UBC-NLP/ARBERT --cache-dir /data/hf-cache\n  \
mawqif download tiny/test-bert@v1              # a tag, branch, commit or refs/pr/N\n  \
HF_TOKEN=hf_... mawqif download org/private-model\n\n\
Files go to the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else \
~/.cache/huggingface/hub), shared with the Python tools. HF_ENDPOINT picks another hub; \
HF_HUB_OFFLINE=1 only checks the cache. The snapshot directory is printed on stdout.")]
pub struct DownloadArgs {
    /// Hub model id, `org/name` or `org/name@REVISION`
    model: String,
    /// Branch, tag, commit sha or `refs/pr/N` (default: the registry's pin, else main)
    #[arg(long)]
    revision: Option<String>,
    /// Hub cache directory (default: from HF_HUB_CACHE / HF_HOME)
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Access token for private or gated repos (default: HF_TOKEN, else `huggingface-cli login`'s)
    #[arg(long)]
    token: Option<String>,
}

#[derive(Args)]
#[command(after_help = "Example:\n  mawqif models")]
pub struct ModelsArgs {
    /// Hub cache directory to look in (default: from HF_HUB_CACHE / HF_HOME)
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

/// A progress bar per file, on stderr when it is a terminal.
struct FileBar(ProgressBar);

impl mawqif::hub::Progress for FileBar {
    fn start(&mut self, file: &str, size: u64, done: u64) {
        self.0.set_length(size);
        self.0.set_position(done);
        self.0.set_message(file.to_string());
    }
    fn advance(&mut self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&mut self) {
        self.0.finish();
    }
    fn waiting(&mut self, file: &str, lock: &Path) {
        self.0.suspend(|| {
            eprintln!(
                "mawqif: another process is downloading {file} (lock {}); waiting for it",
                lock.display()
            )
        });
    }
}

fn file_bar(_file: &str) -> FileBar {
    FileBar(super::progress_bar(
        0,
        "{msg:>20} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ))
}

pub fn download(ctx: &Context, args: DownloadArgs) -> Result<()> {
    let spec = match &args.revision {
        Some(_) if args.model.contains('@') => {
            bail!(
                "give the revision once: either `{}` or --revision",
                args.model
            )
        }
        Some(rev) => format!("{}@{rev}", args.model),
        None => args.model.clone(),
    };
    let model = hub_ref(&spec)?;
    let mut settings = ctx.hub.clone();
    if let Some(dir) = args.cache_dir {
        settings.cache_dir = dir;
    }
    if args.token.is_some() {
        settings.token = args.token;
    }
    let hub = Hub::new(settings)?;
    let snapshot = hub
        .download(&model, file_bar)
        .with_context(|| format!("downloading {model}"))?;
    report(&snapshot);
    let mut out = super::out();
    writeln!(out, "{}", snapshot.dir.display())?;
    out.flush()?;
    Ok(())
}

fn report(s: &Snapshot) {
    eprintln!("{} → commit {}", s.model, s.commit);
    for f in &s.files {
        let size = std::fs::metadata(s.dir.join(f))
            .map(|m| m.len())
            .unwrap_or(0);
        let how = if s.downloaded.contains(f) {
            "downloaded, verified"
        } else {
            "already in the cache"
        };
        eprintln!("  {f:<24} {:>12}  {how}", human_bytes(size));
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub fn models(ctx: &Context, args: ModelsArgs) -> Result<()> {
    let registry = Registry::builtin();
    let mut settings = ctx.hub.clone();
    if let Some(dir) = args.cache_dir {
        settings.cache_dir = dir;
    }
    let mut out = super::out();
    writeln!(
        out,
        "{:<42} {:<12} {:<5} {:<12} {:<8} {:<14} licence",
        "model", "revision", "pool", "preprocess", "prefix", "in cache"
    )?;
    for e in &registry.entries {
        let model = HubModelRef {
            repo: e.id.clone(),
            revision: e.revision.clone(),
        };
        let cached = match cached_snapshot(&settings.cache_dir, &model) {
            Ok(s) => format!("yes ({})", s.commit.get(..7).unwrap_or(&s.commit)),
            Err(_) => "no".to_string(),
        };
        let rev = match e.revision.get(..10) {
            Some(short) if e.revision.len() == 40 => short.to_string(),
            _ => e.revision.clone(),
        };
        let name = if e.default {
            format!("{} (default)", e.id)
        } else {
            e.id.clone()
        };
        writeln!(
            out,
            "{name:<42} {rev:<12} {:<5} {:<12} {:<8} {cached:<14} {}",
            serde_json::to_value(e.pooling)?.as_str().unwrap_or(""),
            serde_json::to_value(e.preprocessing)?
                .as_str()
                .unwrap_or(""),
            format!("{:?}", e.prefix),
            e.licence
        )?;
    }
    let local = Path::new(mawqif::DEFAULT_MODEL_DIR);
    writeln!(
        out,
        "\nlocal: {} ({})",
        local.display(),
        if local.join("config.json").is_file() {
            "present"
        } else {
            "absent: bash scripts/fetch-local-model.sh"
        }
    )?;
    writeln!(out, "hub cache: {}", settings.cache_dir.display())?;
    out.flush()?;
    Ok(())
}

/// The model directory for a `--model` value: a local directory, or a hub
/// id resolved through the cache (downloading on first use). The default
/// local model, when absent, falls back to the registry's default hub model.
pub fn resolve_model_dir(ctx: &Context, spec: &str) -> Result<PathBuf> {
    let is_default = spec == mawqif::DEFAULT_MODEL_DIR && !Path::new(spec).is_dir();
    let hub_spec = match default_hub_model() {
        Some(id) if is_default => {
            eprintln!(
                "mawqif: {spec} not found (bash scripts/fetch-local-model.sh makes it); \
                 using the default hub model {id}"
            );
            id
        }
        _ => spec.to_string(),
    };
    let resolved = resolve_model(&hub_spec, &ctx.hub, |f| {
        eprintln!("mawqif: downloading {f} of {hub_spec} (first use)");
        file_bar(f)
    });
    let resolved = match resolved {
        Ok(r) => r,
        Err(e) if is_default => {
            return Err(anyhow::Error::new(e).context(format!(
                "no local model at {spec} and the default hub model is not available; \
                 run `bash scripts/fetch-local-model.sh` or pass --model"
            )))
        }
        Err(e) => return Err(e).with_context(|| format!("resolving hub model {hub_spec}")),
    };
    if let Some(snapshot) = &resolved.snapshot {
        if !snapshot.downloaded.is_empty() {
            report(snapshot);
        }
    }
    Ok(resolved.dir)
}
