//! Dynamic batching: one queue for the sentences of every request, and one
//! thread that owns the model's time.
//!
//! Request handlers [`Queue::submit`] a [`Job`] (the sentences of one
//! request, with their token counts) and await its scores. The batching
//! thread takes sentences in arrival order, from as many jobs as fit, into
//! a batch of at most `max_batch_sentences` sentences and `max_batch_tokens`
//! tokens, runs the model once on it, and hands each job its scores when
//! its last sentence is done. While a batch runs, new requests queue up, so
//! under load batches fill from many requests: that is what keeps many
//! small requests near the throughput of one large one. A job whose client
//! gave up (its receiver dropped) is skipped.
//!
//! Admission is bounded twice: by queued sentences, and by the time the
//! queued work would take at the model's measured speed (so that what is
//! admitted can finish before the request timeout). A job that does not
//! fit is refused at once ([`Rejected::Full`], answered 429), never parked.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::encode::RunOptions;
use crate::label::Scores;

use super::metrics::{BatchRecord, Metrics};
use super::{BatchOptions, ServeModel};

/// The scores of a job's sentences, in order, or why the model failed.
pub type JobResult = std::result::Result<Vec<Scores>, String>;

/// The sentences of one request, flattened over its texts.
pub struct Job {
    pub units: Vec<String>,
    /// Whether unit `i` starts a text (so it has no previous unit).
    pub starts_text: Vec<bool>,
    /// What each unit costs in a batch, in tokens.
    pub costs: Vec<usize>,
    reply: Option<oneshot::Sender<JobResult>>,
    scores: Vec<Scores>,
    /// Units handed to a batch so far.
    next: usize,
}

impl Job {
    pub fn new(units: Vec<String>, starts_text: Vec<bool>, costs: Vec<usize>) -> Self {
        Self {
            scores: Vec::with_capacity(units.len()),
            units,
            starts_text,
            costs,
            reply: None,
            next: 0,
        }
    }

    fn len(&self) -> usize {
        self.units.len()
    }

    fn remaining(&self) -> usize {
        self.len() - self.next
    }

    fn cancelled(&self) -> bool {
        self.reply.as_ref().is_none_or(|r| r.is_closed())
    }

    fn previous(&self, i: usize) -> Option<&str> {
        if i == 0 || self.starts_text.get(i).copied().unwrap_or(true) {
            None
        } else {
            Some(self.units[i - 1].as_str())
        }
    }
}

/// Why a job was not queued.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejected {
    /// The queue holds `queued` sentences and this job would pass the bound.
    Full {
        queued: usize,
        retry_after: Duration,
    },
    /// The server is stopping.
    Closed,
}

struct State {
    jobs: VecDeque<Job>,
    /// Sentences accepted and not yet scored, the running batch included:
    /// what admission is bounded by.
    pending: usize,
    closed: bool,
    speed: Speed,
}

/// The model's speed while busy, over its last few batches: what the
/// queue's wait is estimated with.
#[derive(Debug, Default)]
struct Speed {
    /// (sentences, seconds) of the most recent successful batches.
    recent: VecDeque<(usize, f64)>,
}

impl Speed {
    /// Enough batches to smooth one slow batch out, few enough to follow
    /// a change of load on the machine within seconds.
    const BATCHES: usize = 16;

    fn record(&mut self, sentences: usize, seconds: f64) {
        if self.recent.len() == Self::BATCHES {
            self.recent.pop_front();
        }
        self.recent.push_back((sentences, seconds));
    }

    /// Sentences per second of model time, once a batch has run.
    fn sentences_per_second(&self) -> Option<f64> {
        let sentences: usize = self.recent.iter().map(|r| r.0).sum();
        let seconds: f64 = self.recent.iter().map(|r| r.1).sum();
        (sentences > 0 && seconds > 0.0).then(|| sentences as f64 / seconds)
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    metrics: Arc<Metrics>,
    options: BatchOptions,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The batching thread never panics while holding the lock (model
        // panics are caught outside it), but a poisoned queue is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handlers' side of the queue.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<Shared>,
}

impl Shared {
    /// An empty, open queue.
    fn new(options: BatchOptions, metrics: Arc<Metrics>) -> Self {
        Shared {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                pending: 0,
                closed: false,
                speed: Speed::default(),
            }),
            wake: Condvar::new(),
            metrics,
            options,
        }
    }
}

impl Queue {
    /// Start the batching thread over `model`. The thread ends once the
    /// queue is [closed](Queue::close) and empty.
    pub fn start(
        model: Arc<dyn ServeModel>,
        options: BatchOptions,
        run: RunOptions,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Queue, JoinHandle<()>)> {
        let shared = Arc::new(Shared::new(options, metrics));
        let worker = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("mawqif-batcher".into())
            .spawn(move || batching_loop(&worker, model.as_ref(), &run))?;
        Ok((Queue { shared }, handle))
    }

    /// Queue `job`; its scores arrive on the returned receiver.
    pub fn submit(&self, mut job: Job) -> Result<oneshot::Receiver<JobResult>, Rejected> {
        let (tx, rx) = oneshot::channel();
        let n = job.len();
        if n == 0 {
            // Nothing to classify: answer without touching the queue.
            let _ = tx.send(Ok(Vec::new()));
            return Ok(rx);
        }
        job.reply = Some(tx);
        let mut state = self.shared.lock();
        if state.closed {
            return Err(Rejected::Closed);
        }
        let options = &self.shared.options;
        let speed = state.speed.sentences_per_second();
        let rate = speed.unwrap_or_else(|| self.shared.metrics.sentences_per_second());
        let after = state.pending + n;
        if after > options.max_queue_sentences {
            return Err(Rejected::Full {
                queued: state.pending,
                retry_after: retry_after(after - options.max_queue_sentences, rate),
            });
        }
        // Work that could not be done before the timeout is refused now,
        // not after waiting. With nothing queued, waiting would not help.
        if let Some(speed) = speed.filter(|_| state.pending > 0) {
            let room = options.max_queue_wait.as_secs_f64() * speed;
            if after as f64 > room {
                return Err(Rejected::Full {
                    queued: state.pending,
                    retry_after: retry_after((after as f64 - room).ceil() as usize, speed),
                });
            }
        }
        state.pending += n;
        state.jobs.push_back(job);
        self.publish(&state);
        drop(state);
        self.shared.wake.notify_one();
        Ok(rx)
    }

    /// Refuse new jobs; the thread finishes the queued ones, then ends.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }

    /// Sentences accepted and not yet scored.
    pub fn pending(&self) -> usize {
        self.shared.lock().pending
    }

    fn publish(&self, state: &State) {
        publish(&self.shared.metrics, state, 0);
    }
}

/// Queue gauges: `active` counts the jobs the thread holds outside the queue.
fn publish(metrics: &Metrics, state: &State, active: usize) {
    metrics
        .queue_sentences
        .store(state.pending, Ordering::Relaxed);
    metrics
        .queue_requests
        .store(state.jobs.len() + active, Ordering::Relaxed);
}

/// How long until `excess` more sentences are done at `sentences_per_second`,
/// so that a refused request would fit (1–60 s).
fn retry_after(excess: usize, sentences_per_second: f64) -> Duration {
    let seconds = if sentences_per_second > 0.0 {
        (excess as f64 / sentences_per_second).ceil()
    } else {
        1.0
    };
    Duration::from_secs(seconds.clamp(1.0, 60.0) as u64)
}

/// The thread: take jobs, run batches, hand out scores, until closed and empty.
fn batching_loop(shared: &Shared, model: &dyn ServeModel, run: &RunOptions) {
    let options = &shared.options;
    // Jobs taken off the queue whose sentences are not all scored yet.
    let mut active: VecDeque<Job> = VecDeque::new();
    loop {
        {
            let mut state = shared.lock();
            while active.is_empty() && state.jobs.is_empty() {
                if state.closed {
                    return;
                }
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            // Take whole jobs while the held work is less than one batch.
            let mut held: usize = active.iter().map(Job::remaining).sum();
            while held < options.max_batch_sentences {
                let Some(job) = state.jobs.pop_front() else {
                    break;
                };
                held += job.remaining();
                active.push_back(job);
            }
            // Clients that gave up free their place in the queue.
            let before = active.len();
            let mut dropped = 0;
            active.retain(|j| {
                let keep = !j.cancelled();
                if !keep {
                    dropped += j.remaining();
                }
                keep
            });
            if active.len() != before {
                state.pending = state.pending.saturating_sub(dropped);
                publish(&shared.metrics, &state, active.len());
            }
        }
        if active.is_empty() {
            continue;
        }

        // (job position in `active`, unit index) of each sentence in the batch.
        let mut members: Vec<(usize, usize)> = Vec::new();
        let mut tokens = 0;
        'fill: for (j, job) in active.iter().enumerate() {
            for u in job.next..job.len() {
                let cost = job.costs.get(u).copied().unwrap_or(1);
                let full = members.len() >= options.max_batch_sentences
                    || (!members.is_empty() && tokens + cost > options.max_batch_tokens);
                if full {
                    break 'fill;
                }
                members.push((j, u));
                tokens += cost;
            }
        }
        let texts: Vec<&str> = members
            .iter()
            .map(|&(j, u)| active[j].units[u].as_str())
            .collect();
        let previous: Vec<Option<&str>> = members
            .iter()
            .map(|&(j, u)| active[j].previous(u))
            .collect();
        let mut requests: Vec<usize> = members.iter().map(|&(j, _)| j).collect();
        requests.dedup();

        let started = Instant::now();
        // A model panic must not take the thread (and every later request) down.
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| model.score(&texts, &previous, run)));
        let seconds = started.elapsed().as_secs_f64();
        let outcome = match outcome {
            Ok(Ok(scores)) if scores.len() == texts.len() => Ok(scores),
            Ok(Ok(scores)) => Err(format!(
                "the model returned {} scores for {} sentences",
                scores.len(),
                texts.len()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the model panicked on this batch".to_string()),
        };
        let batch_len = members.len();
        drop(texts);
        drop(previous);

        let mut scored = batch_len;
        let failed = outcome.is_err();
        match outcome {
            Ok(scores) => {
                shared.metrics.record_batch(BatchRecord {
                    sentences: batch_len,
                    tokens,
                    requests: requests.len(),
                    seconds,
                });
                for (&(j, _), s) in members.iter().zip(scores) {
                    active[j].scores.push(s);
                    active[j].next += 1;
                }
            }
            Err(message) => {
                shared.metrics.record_failed_batch();
                // Fail every job with a sentence in the batch, and free its
                // remaining sentences too.
                for &j in &requests {
                    let job = &mut active[j];
                    scored += job.len() - job.next - members.iter().filter(|m| m.0 == j).count();
                    job.next = job.len();
                    if let Some(reply) = job.reply.take() {
                        let _ = reply.send(Err(message.clone()));
                    }
                }
            }
        }
        // Finished jobs get their scores and leave.
        active.retain_mut(|job| {
            if job.next < job.len() {
                return true;
            }
            if let Some(reply) = job.reply.take() {
                let _ = reply.send(Ok(std::mem::take(&mut job.scores)));
            }
            false
        });
        let mut state = shared.lock();
        if !failed {
            state.speed.record(batch_len, seconds);
        }
        state.pending = state.pending.saturating_sub(scored);
        publish(&shared.metrics, &state, active.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::UnitSizes;
    use crate::label::{LabelSet, Stance};

    /// Scores by sentence length parity; records the batches it sees.
    struct Recorder {
        batches: Mutex<Vec<Vec<String>>>,
        fail_on: Option<&'static str>,
    }

    impl ServeModel for Recorder {
        fn name(&self) -> String {
            "recorder".into()
        }
        fn unit_sizes(&self, units: &[&str]) -> crate::Result<UnitSizes> {
            Ok(UnitSizes {
                tokens: units.iter().map(|u| u.len()).collect(),
                limit: None,
            })
        }
        fn score(
            &self,
            units: &[&str],
            previous: &[Option<&str>],
            _: &RunOptions,
        ) -> crate::Result<Vec<Scores>> {
            if let Some(bad) = self.fail_on {
                assert!(!units.contains(&bad), "poisoned sentence");
            }
            self.batches
                .lock()
                .unwrap()
                .push(units.iter().map(|u| u.to_string()).collect());
            Ok(units
                .iter()
                .zip(previous)
                .map(|(u, p)| {
                    // Label encodes the previous unit, to check context.
                    let label = match p {
                        None => Stance::Report,
                        Some(p) if p.len() < u.len() => Stance::Quotation,
                        Some(_) => Stance::Opinion,
                    };
                    Scores::certain(&LabelSet::stance(), &label.label())
                })
                .collect())
        }
    }

    fn job(texts: &[&[&str]]) -> Job {
        let mut units = Vec::new();
        let mut starts = Vec::new();
        for t in texts {
            for (i, u) in t.iter().enumerate() {
                units.push(u.to_string());
                starts.push(i == 0);
            }
        }
        let costs = units.iter().map(|u| u.len()).collect();
        Job::new(units, starts, costs)
    }

    fn options(sentences: usize, tokens: usize, queue: usize) -> BatchOptions {
        BatchOptions {
            max_batch_sentences: sentences,
            max_batch_tokens: tokens,
            max_queue_sentences: queue,
            max_queue_wait: Duration::from_secs(45),
        }
    }

    /// A queue whose thread has not started: jobs pile up, then one start.
    fn paused(opts: BatchOptions) -> (Queue, Arc<Shared>) {
        let shared = Arc::new(Shared::new(opts, Arc::new(Metrics::new())));
        (
            Queue {
                shared: Arc::clone(&shared),
            },
            shared,
        )
    }

    #[test]
    fn merges_requests_within_sentence_and_token_bounds() {
        let (queue, shared) = paused(options(5, 1000, 100));
        let receivers: Vec<_> = (0..4)
            .map(|k| {
                let a = format!("a{k}");
                let bb = format!("bb{k}");
                queue.submit(job(&[&[&a, &bb]])).unwrap()
            })
            .collect();
        assert_eq!(queue.pending(), 8);
        queue.close();
        let model = Recorder {
            batches: Mutex::new(vec![]),
            fail_on: None,
        };
        batching_loop(&shared, &model, &RunOptions::default());
        let batches = model.batches.into_inner().unwrap();
        // 8 sentences, at most 5 a batch: requests are merged and split.
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![5, 3]);
        assert_eq!(batches[0][..3], ["a0", "bb0", "a1"]);
        for rx in receivers {
            let scores = rx.blocking_recv().unwrap().unwrap();
            // The first unit of a text has no previous one; the second does,
            // even when it lands in the next batch (request 2 was split).
            assert_eq!(
                scores.iter().map(|s| s.best()).collect::<Vec<_>>(),
                vec![Stance::Report.label(), Stance::Quotation.label()]
            );
        }
        assert_eq!(queue.pending(), 0);

        // Token bound: 3 sentences of 4 bytes under a budget of 10.
        let (queue, shared) = paused(options(32, 10, 100));
        let rx = queue.submit(job(&[&["aaaa", "bbbb", "cccc"]])).unwrap();
        queue.close();
        let model = Recorder {
            batches: Mutex::new(vec![]),
            fail_on: None,
        };
        batching_loop(&shared, &model, &RunOptions::default());
        let sizes: Vec<usize> = model
            .batches
            .into_inner()
            .unwrap()
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![2, 1]);
        assert_eq!(rx.blocking_recv().unwrap().unwrap().len(), 3);
    }

    #[test]
    fn full_queue_refuses_and_closed_queue_refuses() {
        let (queue, _shared) = paused(options(8, 1000, 4));
        let _a = queue.submit(job(&[&["x", "y", "z"]])).unwrap();
        match queue.submit(job(&[&["p", "q"]])) {
            Err(Rejected::Full {
                queued,
                retry_after,
            }) => {
                assert_eq!(queued, 3);
                assert!(retry_after >= Duration::from_secs(1));
            }
            other => panic!("expected Full, got {:?}", other.map(|_| ())),
        }
        let _b = queue.submit(job(&[&["p"]])).unwrap();
        queue.close();
        assert!(matches!(
            queue.submit(job(&[&["r"]])),
            Err(Rejected::Closed)
        ));
    }

    /// `n` one-word sentences in one text.
    fn job_of(n: usize) -> Job {
        let words: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        job(&[&refs])
    }

    #[test]
    fn work_past_the_longest_wait_is_refused_unless_the_queue_is_empty() {
        // 10 sentences/s measured, 45 s of queue: room for 450 sentences.
        let (queue, shared) = paused(options(32, 8192, 100_000));
        shared.lock().speed.record(20, 2.0);
        let _a = queue.submit(job_of(400)).unwrap();
        let _b = queue.submit(job_of(50)).unwrap();
        match queue.submit(job_of(20)) {
            Err(Rejected::Full {
                queued,
                retry_after,
            }) => {
                assert_eq!(queued, 450);
                // 20 sentences over the room, at 10 a second.
                assert_eq!(retry_after, Duration::from_secs(2));
            }
            other => panic!("expected Full, got {:?}", other.map(|_| ())),
        }

        // Alone, a job longer than the wait is taken: retrying cannot help it.
        let (queue, shared) = paused(options(32, 8192, 100_000));
        shared.lock().speed.record(20, 2.0);
        let _big = queue.submit(job_of(1000)).unwrap();
        match queue.submit(job_of(1)) {
            Err(Rejected::Full { retry_after, .. }) => {
                assert_eq!(retry_after, Duration::from_secs(56));
            }
            other => panic!("expected Full, got {:?}", other.map(|_| ())),
        }

        // Before any batch has run, the speed is unknown: only the sentence bound holds.
        let (queue, _shared) = paused(options(32, 8192, 100_000));
        let _a = queue.submit(job_of(5000)).unwrap();
        let _b = queue.submit(job_of(5000)).unwrap();
    }

    #[test]
    fn the_speed_follows_the_last_batches() {
        let mut speed = Speed::default();
        assert_eq!(speed.sentences_per_second(), None);
        speed.record(32, 4.0);
        assert_eq!(speed.sentences_per_second(), Some(8.0));
        for _ in 0..Speed::BATCHES {
            speed.record(32, 1.0);
        }
        assert_eq!(speed.sentences_per_second(), Some(32.0));
    }

    #[test]
    fn the_batching_thread_measures_the_speed() {
        let (queue, shared) = paused(options(4, 1000, 100));
        let rx = queue.submit(job_of(10)).unwrap();
        queue.close();
        let model = Recorder {
            batches: Mutex::new(vec![]),
            fail_on: None,
        };
        batching_loop(&shared, &model, &RunOptions::default());
        assert_eq!(rx.blocking_recv().unwrap().unwrap().len(), 10);
        let state = shared.lock();
        assert_eq!(
            state.speed.recent.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert!(state.speed.sentences_per_second().is_some());
    }

    #[test]
    fn cancelled_jobs_are_skipped_and_failures_reach_their_jobs_only() {
        let (queue, shared) = paused(options(2, 1000, 100));
        let gone = queue.submit(job(&[&["gone1", "gone2"]])).unwrap();
        drop(gone);
        let bad = queue.submit(job(&[&["ok", "poison"]])).unwrap();
        let good = queue.submit(job(&[&["fine"]])).unwrap();
        queue.close();
        let model = Recorder {
            batches: Mutex::new(vec![]),
            fail_on: Some("poison"),
        };
        batching_loop(&shared, &model, &RunOptions::default());
        let err = bad.blocking_recv().unwrap().unwrap_err();
        assert!(err.contains("panicked"), "{err}");
        assert_eq!(good.blocking_recv().unwrap().unwrap().len(), 1);
        let seen = model.batches.into_inner().unwrap();
        assert!(seen.iter().flatten().all(|u| !u.starts_with("gone")));
        assert_eq!(queue.pending(), 0);
    }

    #[test]
    fn retry_after_follows_the_rate() {
        assert_eq!(retry_after(400, 100.0), Duration::from_secs(4));
        assert_eq!(retry_after(1, 100.0), Duration::from_secs(1));
        assert_eq!(retry_after(10, 0.0), Duration::from_secs(1));
        assert_eq!(retry_after(1_000_000, 1.0), Duration::from_secs(60));
    }
}
