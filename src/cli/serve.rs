//! `mawqif serve`: parse the flags, bind, load the model in the background,
//! and serve until SIGTERM or SIGINT. The server itself is the library's
//! (`mawqif::serve`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use mawqif::serve::{BatchOptions, Limits, ServeOptions, Server};

use super::Context;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
mawqif serve                                   # http://127.0.0.1:8080/\n  \
mawqif serve --host 0.0.0.0 --port 8080 --threads 2\n  \
curl -s localhost:8080/v1/classify -H 'Content-Type: application/json' -d '{\"text\": \"قال الوزير إن الخطة جاهزة.\"}'\n  \
curl -s localhost:8080/v1/classify -H 'Content-Type: text/plain' --data-binary @eval/fixtures/article.txt\n\n\
Endpoints: POST /v1/classify, POST /v1/segment, GET /health, GET /metrics, GET /openapi.json, and the page at /.")]
pub struct ServeArgs {
    /// Address to listen on (0.0.0.0 for every interface)
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the address is printed on stderr)
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Model directory, hub id (`org/name[@REV]`), or `cues`
    #[arg(long, default_value = mawqif::DEFAULT_MODEL_DIR)]
    model: String,
    /// Classifier head directory (default: the model's own head)
    #[arg(long)]
    head: Option<PathBuf>,
    /// CPU threads for the encoder (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
    /// Most sentences in one batch (sentences of concurrent requests are merged)
    #[arg(long, default_value_t = BatchOptions::default().max_batch_sentences)]
    batch_size: usize,
    /// Most tokens in one batch
    #[arg(long, default_value_t = BatchOptions::default().max_batch_tokens)]
    batch_tokens: usize,
    /// Most sentences waiting in the queue; requests past it get 429 with Retry-After
    #[arg(long, default_value_t = BatchOptions::default().max_queue_sentences)]
    max_queue_sentences: usize,
    /// Most sentences in one request (413 past it)
    #[arg(long, default_value_t = Limits::default().max_request_sentences)]
    max_request_sentences: usize,
    /// Largest request body in bytes (413 past it)
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Seconds a request may take, queueing included (503 past it)
    #[arg(long, default_value_t = Limits::default().request_timeout.as_secs_f64())]
    timeout: f64,
    /// Most seconds of work the queue may hold at the model's measured speed;
    /// requests past it get 429 with Retry-After [default: 3/4 of --timeout]
    #[arg(long)]
    max_queue_wait: Option<f64>,
    /// Truncate sentences of any length instead of refusing very long ones
    #[arg(long)]
    allow_long: bool,
}

pub fn run(ctx: &Context, args: ServeArgs) -> Result<()> {
    super::init_threads(args.threads)?;
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let max_queue_wait = args.max_queue_wait.unwrap_or(args.timeout * 0.75);
    if !(max_queue_wait.is_finite() && max_queue_wait > 0.0) {
        bail!("--max-queue-wait must be a positive number of seconds");
    }
    let options = ServeOptions {
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_request_sentences: args.max_request_sentences,
            request_timeout: Duration::from_secs_f64(args.timeout),
            allow_long: args.allow_long,
        },
        batching: BatchOptions {
            max_batch_sentences: args.batch_size,
            max_batch_tokens: args.batch_tokens,
            max_queue_sentences: args.max_queue_sentences,
            max_queue_wait: Duration::from_secs_f64(max_queue_wait),
        },
    };
    let server = Server::new(options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mawqif-http")
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(async {
        // Before anything else, so that an early SIGTERM still stops cleanly.
        let signals = Signals::new()?;
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        eprintln!(
            "mawqif: listening on http://{address}/ (loading model {})",
            args.model
        );

        // Load in the background: /health answers "loading" meanwhile.
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
        let loader = server.clone();
        let model = args.model.clone();
        let head = args.head.clone();
        let ctx = ctx.clone();
        std::thread::Builder::new()
            .name("mawqif-load".into())
            .spawn(move || {
                let loaded = super::load_classifier(&ctx, &model, head.as_deref())
                    .and_then(|c| loader.set_model(c).map_err(anyhow::Error::from));
                match loaded {
                    Ok(()) => eprintln!("mawqif: ready"),
                    Err(e) => {
                        let _ = failed_tx.send(e);
                    }
                }
            })
            .context("starting the loading thread")?;

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn({
            let server = server.clone();
            async move {
                server
                    .run(listener, async {
                        let _ = stop_rx.await;
                    })
                    .await
            }
        });
        let outcome: Result<()> = tokio::select! {
            signal = signals.next() => {
                eprintln!("mawqif: {}: finishing requests in flight, then stopping", signal?);
                Ok(())
            }
            Ok(error) = failed_rx => Err(error.context("loading the model")),
        };
        let _ = stop_tx.send(());
        serving.await.context("the server task failed")??;
        if outcome.is_ok() {
            eprintln!("mawqif: stopped");
        }
        outcome
    });
    // Handlers are done; a preparation cut short by a timeout may still be
    // running on the blocking pool, and need not be waited for.
    runtime.shutdown_timeout(Duration::from_secs(5));
    outcome
}

/// SIGTERM (what Kubernetes and systemd send) and SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The name of the first signal that arrives.
    async fn next(mut self) -> Result<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Ok("SIGTERM"),
                _ = self.int.recv() => Ok("SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .context("listening for Ctrl-C")?;
            Ok("Ctrl-C")
        }
    }
}
