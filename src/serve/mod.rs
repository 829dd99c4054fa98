//! `mawqif serve`: a classifier behind HTTP, with dynamic batching.
//!
//! Contract: [`Server::new`] makes a server that answers at once, with
//! `/health` saying "loading" (503); [`Server::set_model`] starts the
//! batching thread and makes it ready; [`Server::run`] serves a listener
//! until a shutdown future resolves, then stops accepting, finishes what is
//! in flight and returns.
//!
//! Routes (`openapi.json` describes them): `POST /v1/classify`,
//! `POST /v1/segment`, `GET /health`, `GET /metrics` (Prometheus),
//! `GET /openapi.json`, and the web page at `/`.
//!
//! This is the only module with an async runtime (tokio, through axum).
//! The model runs on one dedicated thread ([`batcher`]); handlers only
//! parse, segment, count tokens (on tokio's blocking pool) and wait.

mod api;
pub mod batcher;
mod error;
pub mod metrics;
mod openapi;
mod page;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::classifier::{Classifier, UnitSizes};
use crate::encode::RunOptions;
use crate::label::{LabelSet, Scores};

pub use error::{ApiError, ServeError};
pub use openapi::openapi;

/// What the server needs of a model: a name, sizes for batching, and
/// scores of units given their predecessors. [`Classifier`] is one; tests
/// use others (a model that waits, to fill the queue on purpose).
pub trait ServeModel: Send + Sync + 'static {
    fn name(&self) -> String;
    /// The labels its scores are over (the four stance labels unless said).
    fn labels(&self) -> LabelSet {
        LabelSet::stance()
    }
    fn unit_sizes(&self, units: &[&str]) -> crate::Result<UnitSizes>;
    /// Scores of `units`; `previous[i]` is the unit before `units[i]` in its text.
    fn score(
        &self,
        units: &[&str],
        previous: &[Option<&str>],
        options: &RunOptions,
    ) -> crate::Result<Vec<Scores>>;
}

impl ServeModel for Classifier {
    fn name(&self) -> String {
        Classifier::name(self)
    }

    fn labels(&self) -> LabelSet {
        Classifier::labels(self)
    }

    fn unit_sizes(&self, units: &[&str]) -> crate::Result<UnitSizes> {
        Classifier::unit_sizes(self, units)
    }

    fn score(
        &self,
        units: &[&str],
        previous: &[Option<&str>],
        options: &RunOptions,
    ) -> crate::Result<Vec<Scores>> {
        Ok(self
            .classify_units(units, previous, options, |_| {})?
            .scores)
    }
}

/// How the batching thread groups sentences, and how much it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Most sentences in one model call (also the encoder's forward-pass size).
    pub max_batch_sentences: usize,
    /// Most tokens in one model call.
    pub max_batch_tokens: usize,
    /// Most sentences accepted and not yet classified; past it, 429.
    pub max_queue_sentences: usize,
    /// Longest the queued work may take at the model's measured speed; a
    /// request that would wait longer gets 429 instead of timing out after
    /// waiting. Kept under the request timeout, so that what is admitted
    /// can finish in time.
    pub max_queue_wait: Duration,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_batch_sentences: 32,
            // The fast engine's own limit per forward pass.
            max_batch_tokens: 8192,
            // About 20 s of work for e5-small on 2 cores.
            max_queue_sentences: 4096,
            // Three quarters of the default request timeout (60 s): room
            // for the speed to drop while a request waits.
            max_queue_wait: Duration::from_secs(45),
        }
    }
}

/// Per-request limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body; past it, 413.
    pub max_body_bytes: usize,
    /// Most sentences in one request, all texts together; past it, 413.
    pub max_request_sentences: usize,
    /// Longest a request may take, queueing included; past it, 503.
    pub request_timeout: Duration,
    /// Truncate very long units instead of refusing them (400).
    pub allow_long: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_request_sentences: 1024,
            request_timeout: Duration::from_secs(60),
            allow_long: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeOptions {
    pub limits: Limits,
    pub batching: BatchOptions,
}

impl ServeOptions {
    /// Refuse settings that could never serve a request.
    pub fn check(&self) -> Result<(), ServeError> {
        let bad = |m: String| Err(ServeError::BadOption(m));
        let (l, b) = (&self.limits, &self.batching);
        if b.max_batch_sentences == 0 || b.max_batch_tokens == 0 {
            return bad("batches need room for at least one sentence and one token".into());
        }
        if l.max_request_sentences == 0 || l.max_body_bytes == 0 {
            return bad("requests need room for at least one sentence".into());
        }
        if l.max_request_sentences > b.max_queue_sentences {
            return bad(format!(
                "a request may hold {} sentences but the queue only {}: a full-size request could never be queued",
                l.max_request_sentences, b.max_queue_sentences
            ));
        }
        if l.request_timeout.is_zero() {
            return bad("the request timeout must be above zero".into());
        }
        if b.max_queue_wait.is_zero() || b.max_queue_wait > l.request_timeout {
            return bad(format!(
                "the longest queue wait ({:?}) must be above zero and at most the request timeout ({:?})",
                b.max_queue_wait, l.request_timeout
            ));
        }
        Ok(())
    }
}

/// The loaded model and its queue.
struct Ready {
    model: Arc<dyn ServeModel>,
    name: String,
    labels: LabelSet,
    queue: batcher::Queue,
}

/// Everything the handlers share.
struct AppState {
    options: ServeOptions,
    ready: OnceLock<Ready>,
    metrics: Arc<metrics::Metrics>,
    draining: AtomicBool,
    batcher: Mutex<Option<JoinHandle<()>>>,
}

/// One HTTP server over one model.
#[derive(Clone)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    pub fn new(options: ServeOptions) -> Result<Self, ServeError> {
        options.check()?;
        Ok(Self {
            state: Arc::new(AppState {
                options,
                ready: OnceLock::new(),
                metrics: Arc::new(metrics::Metrics::new()),
                draining: AtomicBool::new(false),
                batcher: Mutex::new(None),
            }),
        })
    }

    /// Start the batching thread over `model`; from now on the server is ready.
    pub fn set_model(&self, model: impl ServeModel) -> Result<(), ServeError> {
        if self.state.ready.get().is_some() {
            return Err(ServeError::ModelAlreadySet);
        }
        let model: Arc<dyn ServeModel> = Arc::new(model);
        let run = RunOptions {
            batch_size: self.state.options.batching.max_batch_sentences,
            // Overlong units were refused (or warned about) per request;
            // one of them must never fail a batch shared with others.
            allow_long: true,
        };
        let (queue, thread) = batcher::Queue::start(
            Arc::clone(&model),
            self.state.options.batching,
            run,
            Arc::clone(&self.state.metrics),
        )
        .map_err(ServeError::Thread)?;
        let ready = Ready {
            name: model.name(),
            labels: model.labels(),
            model,
            queue,
        };
        if let Err(ready) = self.state.ready.set(ready) {
            ready.queue.close();
            return Err(ServeError::ModelAlreadySet);
        }
        *self.state.batcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.state.ready.get().is_some()
    }

    /// The routes, for embedding in another axum application.
    pub fn router(&self) -> axum::Router {
        api::router(Arc::clone(&self.state))
    }

    /// Serve `listener` until `shutdown` resolves; then stop accepting,
    /// let in-flight requests finish, and stop the batching thread.
    pub async fn run(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = Arc::clone(&self.state);
        let draining = async move {
            shutdown.await;
            state.draining.store(true, Ordering::SeqCst);
        };
        axum::serve(listener, self.router())
            .with_graceful_shutdown(draining)
            .await?;
        if let Some(ready) = self.state.ready.get() {
            ready.queue.close();
        }
        let thread = self
            .state
            .batcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            // Every handler is done, so only abandoned jobs are left: this is quick.
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| ServeError::Io(std::io::Error::other(e)))?
                .map_err(|_| {
                    ServeError::Io(std::io::Error::other("the batching thread panicked"))
                })?;
        }
        Ok(())
    }
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialise the response: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_cannot_serve_are_refused() {
        assert!(ServeOptions::default().check().is_ok());
        let mut o = ServeOptions::default();
        o.limits.max_request_sentences = o.batching.max_queue_sentences + 1;
        assert!(matches!(o.check(), Err(ServeError::BadOption(_))));
        let mut o = ServeOptions::default();
        o.batching.max_batch_tokens = 0;
        assert!(o.check().is_err());
        let mut o = ServeOptions::default();
        o.limits.request_timeout = Duration::ZERO;
        assert!(o.check().is_err());
        let mut o = ServeOptions::default();
        o.limits.request_timeout = Duration::from_secs(10);
        assert!(matches!(o.check(), Err(ServeError::BadOption(m)) if m.contains("queue wait")));
        o.batching.max_queue_wait = Duration::from_secs(8);
        assert!(o.check().is_ok());
    }
}
