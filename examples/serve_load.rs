//! A bounded load test for `mawqif serve`: for each concurrency level, that
//! many clients send one article per request until a fixed number of
//! articles is answered (a 429 is retried after its Retry-After, and the
//! article's latency runs from its first try); prints one JSON line per
//! level (throughput, latency percentiles, errors). Loopback addresses only.
//!
//! cargo run --release --example serve_load -- --url http://127.0.0.1:8080 \
//!     --file eval/fixtures/article.txt --clients 1,8,64 --requests 40,160,512
//!
//! scripts/serve-load.sh runs it next to `mawqif bench` and writes eval/SERVE.md.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

struct Args {
    url: String,
    file: String,
    clients: Vec<usize>,
    requests: Vec<usize>,
    warmup: usize,
}

fn parse_list(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .with_context(|| format!("bad number {x:?}"))
        })
        .collect()
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        url: "http://127.0.0.1:8080".into(),
        file: "eval/fixtures/article.txt".into(),
        clients: vec![1, 8, 64],
        requests: vec![40, 160, 512],
        warmup: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--file" => args.file = value()?,
            "--clients" => args.clients = parse_list(&value()?)?,
            "--requests" => args.requests = parse_list(&value()?)?,
            "--warmup" => args.warmup = value()?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if args.clients.len() != args.requests.len() {
        bail!("--clients and --requests need the same number of entries");
    }
    // Load goes to this machine only.
    let host = args
        .url
        .strip_prefix("http://")
        .context("--url must be http://")?
        .split('/')
        .next()
        .unwrap_or("");
    let loopback =
        host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
    if !loopback {
        bail!("refusing to load {host}: only loopback addresses (127.0.0.0/8, localhost, [::1])");
    }
    Ok(args)
}

#[derive(Default)]
struct Outcome {
    latencies_ms: Vec<f64>,
    ok: usize,
    rejected: usize,
    errors: Vec<String>,
    sentences: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn send(agent: &ureq::Agent, url: &str, body: &str) -> (Result<usize, String>, Option<u64>) {
    match agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(r) => {
            let parsed: Result<serde_json::Value, _> = serde_json::from_reader(r.into_reader());
            match parsed {
                Ok(v) => match v["results"][0]["units"].as_array() {
                    Some(units) => (Ok(units.len()), None),
                    None => (Err("200 without units".into()), None),
                },
                Err(e) => (Err(format!("bad JSON: {e}")), None),
            }
        }
        Err(ureq::Error::Status(429, r)) => {
            let wait = r.header("Retry-After").and_then(|v| v.parse().ok());
            (Err("429".into()), Some(wait.unwrap_or(1)))
        }
        Err(ureq::Error::Status(code, r)) => (
            Err(format!("{code}: {}", r.into_string().unwrap_or_default())),
            None,
        ),
        Err(e) => (Err(e.to_string()), None),
    }
}

fn run_level(url: &str, body: &str, clients: usize, requests: usize) -> (Outcome, f64) {
    let tickets = Arc::new(AtomicUsize::new(requests));
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let tickets = Arc::clone(&tickets);
            let outcome = Arc::clone(&outcome);
            let url = url.to_string();
            let body = body.to_string();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(300))
                    .build();
                while tickets
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_sub(1))
                    .is_ok()
                {
                    // A 429 is retried after its Retry-After, as a polite
                    // client would; the article still counts as one request.
                    let first_try = Instant::now();
                    loop {
                        let (result, retry) = send(&agent, &url, &body);
                        let ms = first_try.elapsed().as_secs_f64() * 1000.0;
                        let mut o = outcome.lock().unwrap_or_else(|e| e.into_inner());
                        match (result, retry) {
                            (Ok(n), _) => {
                                o.ok += 1;
                                o.sentences += n;
                                o.latencies_ms.push(ms);
                                break;
                            }
                            (Err(_), Some(wait)) => {
                                o.rejected += 1;
                                drop(o);
                                std::thread::sleep(Duration::from_secs(wait));
                            }
                            (Err(e), None) => {
                                o.errors.push(e);
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let seconds = started.elapsed().as_secs_f64();
    let outcome = Arc::try_unwrap(outcome)
        .ok()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_default();
    (outcome, seconds)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let text =
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file))?;
    let body = serde_json::json!({ "text": text }).to_string();
    let url = format!("{}/v1/classify", args.url.trim_end_matches('/'));
    // Warm-up: page faults and the thread pool, not measured.
    let (warm, _) = run_level(&url, &body, 1, args.warmup);
    if warm.ok != args.warmup {
        bail!("warm-up failed: {:?}", warm.errors);
    }
    for (&clients, &requests) in args.clients.iter().zip(&args.requests) {
        let (mut o, seconds) = run_level(&url, &body, clients, requests);
        o.latencies_ms.sort_by(f64::total_cmp);
        let line = serde_json::json!({
            "clients": clients,
            "requests": requests,
            "ok": o.ok,
            "rejected_429": o.rejected,
            "errors": o.errors.len(),
            "first_error": o.errors.first(),
            "seconds": seconds,
            "sentences": o.sentences,
            "sentences_per_s": o.sentences as f64 / seconds,
            "requests_per_s": o.ok as f64 / seconds,
            "latency_p50_ms": percentile(&o.latencies_ms, 50.0),
            "latency_p90_ms": percentile(&o.latencies_ms, 90.0),
            "latency_p99_ms": percentile(&o.latencies_ms, 99.0),
            "latency_max_ms": o.latencies_ms.last(),
        });
        println!("{line}");
    }
    Ok(())
}
