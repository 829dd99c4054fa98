//! The command-line front: argument parsing, the environment, progress bars
//! and the thread pool. Everything else is the library's.

pub mod average;
pub mod bench;
pub mod classify;
pub mod eval;
pub mod hub;
pub mod import;
pub mod serve;
pub mod train;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};

use mawqif::hub::HubSettings;
use mawqif::{Classifier, Engine, LoadOptions};

/// What every command may need from the environment, read once at start.
#[derive(Clone)]
pub struct Context {
    pub engine: Engine,
    /// `HF_*` variables, as the Python tools read them.
    pub hub: HubSettings,
    /// `$MAWQIF_CACHE`, else `~/.cache/mawqif`.
    pub cache_root: PathBuf,
    /// `$MAWQIF_TRAIN_DATA`, else the bundled gold; empty disables first-use training.
    pub train_data: Vec<PathBuf>,
}

impl Context {
    /// `engine` is `--engine`; without it, `$MAWQIF_ENGINE`, else auto.
    pub fn from_env(engine: Option<&str>) -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let engine = match engine.map(str::to_string).or_else(|| var("MAWQIF_ENGINE")) {
            Some(name) => Engine::parse(&name)?,
            None => Engine::auto(),
        };
        let cache_root = var("MAWQIF_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache/mawqif")))
            .unwrap_or_else(|| PathBuf::from(".mawqif-cache"));
        let train_data = match std::env::var_os("MAWQIF_TRAIN_DATA") {
            Some(d) if d.is_empty() => vec![],
            Some(d) => vec![PathBuf::from(d)],
            None => vec![PathBuf::from(mawqif::DEFAULT_TRAIN_DATA)],
        };
        Ok(Self {
            engine,
            hub: HubSettings::from_vars(var),
            cache_root,
            train_data,
        })
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            engine: self.engine,
            models_root: PathBuf::from("models"),
        }
    }
}

/// Size the global thread pool (encoder and matrix products) before any
/// parallel work starts; `None` keeps rayon's default of all cores.
pub fn init_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .context("setting up the thread pool")?;
    }
    Ok(())
}

/// A progress bar on stderr that hides itself when stderr is not a
/// terminal. `unit` names what is counted (`sentences`, `bytes`).
pub fn progress_bar(total: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A bar counting sentences.
pub fn progress(total: usize, what: &str) -> ProgressBar {
    let bar = progress_bar(
        total as u64,
        "{msg} [{bar:30}] {pos}/{len} sentences ({per_sec}, eta {eta})",
    );
    bar.set_message(what.to_string());
    bar
}

/// `--model` value: a baseline name, a model directory or a hub id; an
/// encoder without a head gets one trained on the bundled data, once.
pub fn load_classifier(ctx: &Context, model: &str, head: Option<&Path>) -> Result<Classifier> {
    match model {
        "cues" => Ok(Classifier::Cues),
        "majority" => bail!("`majority` needs gold labels: use it with `mawqif eval`"),
        spec => {
            let dir = hub::resolve_model_dir(ctx, spec)?;
            mawqif::train::load_or_train(
                &dir,
                head,
                &ctx.train_data,
                &ctx.cache_root,
                &ctx.load_options(),
                |msg| eprintln!("mawqif: {msg}"),
            )
            .with_context(|| format!("loading model {spec}"))
        }
    }
}

/// Standard output for results. A write that fails because the reader has
/// gone (`mawqif models | head -1`) fails with [`StdoutClosed`] inside the
/// error, which `main` turns into a quiet exit 0: the reader chose to stop.
pub struct Out(std::io::BufWriter<std::io::StdoutLock<'static>>);

/// The marker of a write to a closed standard output.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

fn mark_closed(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        e
    }
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(mark_closed)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(mark_closed)
    }
}

/// Buffered standard output; call `flush` at the end (a drop would lose
/// its error).
pub fn out() -> Out {
    Out(std::io::BufWriter::new(std::io::stdout().lock()))
}

/// Did the command stop only because standard output was closed?
pub fn stopped_by_closed_stdout(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.get_ref())
            .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// Files named on the command line; none means stdin.
pub fn input_files(files: Vec<PathBuf>) -> Vec<PathBuf> {
    if files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        files
    }
}
