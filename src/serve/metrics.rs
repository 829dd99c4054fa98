//! Counters, gauges and histograms of one server, rendered in the
//! Prometheus text format (version 0.0.4) by hand: a few dozen series do
//! not need a metrics library.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Request latency buckets, seconds: from a cached page to a long queue.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const BATCH_SENTENCE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const BATCH_TOKEN_BUCKETS: &[f64] = &[64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0];
const BATCH_REQUEST_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
const BATCH_SECONDS_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The window over which `mawqif_sentences_per_second` is averaged.
const RATE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; the last one is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i];
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[self.bounds.len()];
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// One batch the batching thread ran.
#[derive(Debug, Clone, Copy)]
pub struct BatchRecord {
    pub sentences: usize,
    pub tokens: usize,
    /// How many requests had sentences in it: above 1 means merged.
    pub requests: usize,
    pub seconds: f64,
}

#[derive(Debug)]
struct Batches {
    sentences: Histogram,
    tokens: Histogram,
    requests: Histogram,
    seconds: Histogram,
    /// (when, sentences) of recent batches, for the rate gauge.
    recent: VecDeque<(Instant, usize)>,
}

#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    batches: Mutex<Batches>,
    sentences_total: AtomicU64,
    failed_batches: AtomicU64,
    /// Sentences accepted and not yet classified (queued or in the running batch).
    pub queue_sentences: AtomicUsize,
    /// Requests with sentences still to classify.
    pub queue_requests: AtomicUsize,
    pub in_flight: AtomicUsize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            requests: Mutex::default(),
            errors: Mutex::default(),
            latency: Mutex::default(),
            batches: Mutex::new(Batches {
                sentences: Histogram::new(BATCH_SENTENCE_BUCKETS),
                tokens: Histogram::new(BATCH_TOKEN_BUCKETS),
                requests: Histogram::new(BATCH_REQUEST_BUCKETS),
                seconds: Histogram::new(BATCH_SECONDS_BUCKETS),
                recent: VecDeque::new(),
            }),
            sentences_total: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
            queue_sentences: AtomicUsize::new(0),
            queue_requests: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// One finished request: its route, status, error kind (if any) and duration.
    pub fn record_request(
        &self,
        route: &'static str,
        status: u16,
        error_kind: Option<&'static str>,
        seconds: f64,
    ) {
        *lock(&self.requests).entry((route, status)).or_default() += 1;
        if let Some(kind) = error_kind {
            *lock(&self.errors).entry(kind).or_default() += 1;
        }
        lock(&self.latency)
            .entry(route)
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(seconds);
    }

    pub fn record_batch(&self, batch: BatchRecord) {
        self.sentences_total
            .fetch_add(batch.sentences as u64, Ordering::Relaxed);
        let mut b = lock(&self.batches);
        b.sentences.observe(batch.sentences as f64);
        b.tokens.observe(batch.tokens as f64);
        b.requests.observe(batch.requests as f64);
        b.seconds.observe(batch.seconds);
        let now = Instant::now();
        b.recent.push_back((now, batch.sentences));
        while b
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            b.recent.pop_front();
        }
    }

    pub fn record_failed_batch(&self) {
        self.failed_batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Sentences classified per second over the last [`RATE_WINDOW`] (or
    /// since start, when the server is younger than that).
    pub fn sentences_per_second(&self) -> f64 {
        let now = Instant::now();
        let window = RATE_WINDOW
            .min(now.duration_since(self.started))
            .as_secs_f64();
        let b = lock(&self.batches);
        let done: usize = b
            .recent
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= RATE_WINDOW)
            .map(|(_, n)| n)
            .sum();
        if window <= 0.0 {
            0.0
        } else {
            done as f64 / window
        }
    }

    /// The whole exposition; `ready` is whether a model is loaded.
    pub fn render(&self, ready: bool) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: String| {
            head(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        };
        gauge(
            &mut out,
            "mawqif_ready",
            "1 once the model is loaded and requests are served",
            format!("{}", u8::from(ready)),
        );
        gauge(
            &mut out,
            "mawqif_uptime_seconds",
            "Seconds since the server started",
            format!("{:.3}", self.started.elapsed().as_secs_f64()),
        );

        head(
            &mut out,
            "mawqif_requests_total",
            "counter",
            "HTTP requests answered, by route and status code",
        );
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "mawqif_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        head(
            &mut out,
            "mawqif_errors_total",
            "counter",
            "Error responses by kind (the `kind` of the JSON error body)",
        );
        for (kind, n) in lock(&self.errors).iter() {
            let _ = writeln!(out, "mawqif_errors_total{{kind=\"{kind}\"}} {n}");
        }
        head(
            &mut out,
            "mawqif_request_duration_seconds",
            "histogram",
            "Time from request to response, by route",
        );
        for (route, h) in lock(&self.latency).iter() {
            h.render(
                &mut out,
                "mawqif_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        gauge(
            &mut out,
            "mawqif_requests_in_flight",
            "Requests being handled now",
            format!("{}", self.in_flight.load(Ordering::Relaxed)),
        );

        gauge(
            &mut out,
            "mawqif_queue_sentences",
            "Sentences accepted and not yet classified",
            format!("{}", self.queue_sentences.load(Ordering::Relaxed)),
        );
        gauge(
            &mut out,
            "mawqif_queue_requests",
            "Requests with sentences not yet classified",
            format!("{}", self.queue_requests.load(Ordering::Relaxed)),
        );

        head(
            &mut out,
            "mawqif_sentences_total",
            "counter",
            "Sentences classified",
        );
        let _ = writeln!(
            out,
            "mawqif_sentences_total {}",
            self.sentences_total.load(Ordering::Relaxed)
        );
        gauge(
            &mut out,
            "mawqif_sentences_per_second",
            "Sentences classified per second over the last 10 s",
            format!("{:.3}", self.sentences_per_second()),
        );
        head(
            &mut out,
            "mawqif_batch_failures_total",
            "counter",
            "Batches whose model call failed (their requests got 500)",
        );
        let _ = writeln!(
            out,
            "mawqif_batch_failures_total {}",
            self.failed_batches.load(Ordering::Relaxed)
        );
        let b = lock(&self.batches);
        for (name, help, h) in [
            (
                "mawqif_batch_sentences",
                "Sentences per batch",
                &b.sentences,
            ),
            (
                "mawqif_batch_tokens",
                "Tokens per batch (before truncation, capped at the model's limit)",
                &b.tokens,
            ),
            (
                "mawqif_batch_requests",
                "Requests merged into one batch",
                &b.requests,
            ),
            (
                "mawqif_batch_duration_seconds",
                "Model time per batch",
                &b.seconds,
            ),
        ] {
            head(&mut out, name, "histogram", help);
            h.render(&mut out, name, "");
        }
        out
    }
}

/// A poisoned lock only means another thread panicked while counting:
/// the counts are still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_complete() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 9.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "route=\"a\"");
        assert!(out.contains("x_bucket{route=\"a\",le=\"1\"} 2"), "{out}");
        assert!(out.contains("x_bucket{route=\"a\",le=\"2\"} 3"), "{out}");
        assert!(out.contains("x_bucket{route=\"a\",le=\"+Inf\"} 4"), "{out}");
        assert!(out.contains("x_sum{route=\"a\"} 12"), "{out}");
        assert!(out.contains("x_count{route=\"a\"} 4"), "{out}");
    }

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::new();
        m.record_request("classify", 200, None, 0.2);
        m.record_request("classify", 429, Some("queue_full"), 0.001);
        m.record_batch(BatchRecord {
            sentences: 40,
            tokens: 1200,
            requests: 3,
            seconds: 0.25,
        });
        let text = m.render(true);
        for needle in [
            "mawqif_ready 1",
            "mawqif_requests_total{route=\"classify\",status=\"429\"} 1",
            "mawqif_errors_total{kind=\"queue_full\"} 1",
            "mawqif_request_duration_seconds_count{route=\"classify\"} 2",
            "mawqif_batch_sentences_bucket{le=\"64\"} 1",
            "mawqif_batch_requests_sum 3",
            "mawqif_sentences_total 40",
            "mawqif_queue_sentences 0",
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
        assert!(m.sentences_per_second() > 0.0);
        // Every sample line belongs to a family announced by # TYPE.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            assert!(
                families.iter().any(|f| name.starts_with(f)),
                "orphan sample {line}"
            );
        }
    }
}
