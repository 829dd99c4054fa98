//! `mawqif serve`: every endpoint, every error, dynamic batching, /health
//! under load, a bounded concurrent run, and SIGTERM with requests in flight.
//! Servers listen on 127.0.0.1, port 0.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mawqif::classifier::UnitSizes;
use mawqif::label::{LabelSet, Scores, Stance};
use mawqif::serve::{BatchOptions, Limits, ServeModel, ServeOptions, Server};
use mawqif::{classify_text, Classifier, LoadOptions, MawqifError, RunOptions, Segmenter};
use serde_json::json;

use crate::common::http::{
    get, metric, post, post_json, post_raw, wait_until, InProcess, ServeProcess,
};

fn tiny_classifier() -> (tempfile::TempDir, Classifier) {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let classifier = Classifier::load_neural(&dir, None, &LoadOptions::default()).unwrap();
    (tmp, classifier)
}

fn ready_server(options: ServeOptions, model: impl ServeModel) -> InProcess {
    let server = Server::new(options).unwrap();
    server.set_model(model).unwrap();
    InProcess::start(server)
}

/// A stand-in model whose batches wait at a gate the test opens, and which
/// records what each batch held: it makes queueing deterministic.
#[derive(Clone, Default)]
struct Gated {
    inner: Arc<GatedInner>,
}

#[derive(Default)]
struct GatedInner {
    open: Mutex<bool>,
    opened: Condvar,
    batches: Mutex<Vec<Vec<String>>>,
    /// Batches that reached the gate.
    entered: Mutex<usize>,
    /// A unit that makes the model fail, to test 500s.
    poison: Mutex<Option<String>>,
}

impl Gated {
    fn open(&self) {
        *self.inner.open.lock().unwrap() = true;
        self.inner.opened.notify_all();
    }

    fn entered(&self) -> usize {
        *self.inner.entered.lock().unwrap()
    }

    fn batches(&self) -> Vec<Vec<String>> {
        self.inner.batches.lock().unwrap().clone()
    }
}

impl ServeModel for Gated {
    fn name(&self) -> String {
        "gated".into()
    }

    fn unit_sizes(&self, units: &[&str]) -> mawqif::Result<UnitSizes> {
        Ok(UnitSizes {
            tokens: units
                .iter()
                .map(|u| u.split_whitespace().count() + 2)
                .collect(),
            limit: Some(64),
        })
    }

    fn score(
        &self,
        units: &[&str],
        _previous: &[Option<&str>],
        _options: &RunOptions,
    ) -> mawqif::Result<Vec<Scores>> {
        *self.inner.entered.lock().unwrap() += 1;
        let mut open = self.inner.open.lock().unwrap();
        while !*open {
            open = self.inner.opened.wait(open).unwrap();
        }
        drop(open);
        if let Some(p) = self.inner.poison.lock().unwrap().as_deref() {
            if units.contains(&p) {
                return Err(MawqifError::Tokenizer(format!("cannot read {p:?}")));
            }
        }
        self.inner
            .batches
            .lock()
            .unwrap()
            .push(units.iter().map(|u| u.to_string()).collect());
        Ok(vec![
            Scores::certain(
                &LabelSet::stance(),
                &Stance::Report.label()
            );
            units.len()
        ])
    }
}

/// Three short Arabic sentences, marked with `tag` so batches can be traced.
fn small_text(tag: usize) -> String {
    format!(
        "وصل الوفد رقم {tag} إلى العاصمة.\nوقال الوزير رقم {tag}: «لن نتراجع».\nرحبت الأحزاب بالاتفاق رقم {tag}."
    )
}

#[test]
fn classify_segment_health_metrics_openapi_and_page() {
    let (_tmp, classifier) = tiny_classifier();
    let article = crate::common::article();
    // What the library gives for the article: the server must give the same.
    let (expected, _) =
        classify_text("0", &article, &classifier, &RunOptions::default(), |_| {}).unwrap();
    let s = ready_server(ServeOptions::default(), classifier);

    let health = get(&s.url("/health"));
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "ready");

    // One text: the unit objects of the JSONL contract, plus its profile.
    let r = post_json(&s.url("/v1/classify"), &json!({ "text": article }));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.content_type.starts_with("application/json"));
    let v = r.json();
    // The page marks labels under this as worth checking, like the table.
    let unsure_below = v["unsure_below"]
        .as_f64()
        .expect("unsure_below is a number");
    assert!((unsure_below - f64::from(mawqif::report::UNSURE_BELOW)).abs() < 1e-6);
    let result = &v["results"][0];
    assert_eq!(result["id"], "0");
    let units: Vec<mawqif::LabelledUnit> = serde_json::from_value(result["units"].clone()).unwrap();
    assert_eq!(units.len(), 49);
    for (got, want) in units.iter().zip(&expected) {
        assert_eq!(
            (got.index, got.start, got.end, &got.text, &got.label),
            (want.index, want.start, want.end, &want.text, &want.label)
        );
        let opinion = Stance::Opinion.label();
        assert!((got.scores.get(&opinion) - want.scores.get(&opinion)).abs() < 1e-4);
        assert_eq!(&article[got.start..got.end], got.text);
    }
    for unit in result["units"].as_array().unwrap() {
        let keys: HashSet<&str> = unit
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            HashSet::from(["file", "index", "start", "end", "text", "label", "scores"])
        );
    }
    let profile = &result["profile"];
    assert_eq!(profile["schema"], "mawqif-profile/1");
    assert_eq!(profile["sentences"], 49);
    let counted: u64 = ["report", "quotation", "endorsement", "opinion"]
        .iter()
        .map(|l| profile["counts"][l].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 49);

    // Several texts with ids; each is labelled as if alone.
    let r = post_json(
        &s.url("/v1/classify"),
        &json!({ "texts": [small_text(1), article], "ids": ["short", "article.txt"] }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["results"][0]["id"], "short");
    assert_eq!(v["results"][0]["units"].as_array().unwrap().len(), 3);
    assert_eq!(v["results"][0]["units"][2]["file"], "short");
    let second = v["results"][1]["units"].as_array().unwrap();
    assert_eq!(second.len(), 49);
    assert_eq!(second[10]["label"], result["units"][10]["label"]);
    assert_eq!(v["results"][1]["profile"]["file"], "article.txt");

    // The text itself as text/plain.
    let r = post(
        &s.url("/v1/classify"),
        "text/plain; charset=utf-8",
        article.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["results"][0]["units"], result["units"]);

    // A text without Arabic: no units, a warning, not an error.
    let r = post_json(
        &s.url("/v1/classify"),
        &json!({ "text": "just English here." }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["results"][0]["units"], json!([]));
    assert!(r.json()["results"][0]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("no sentence"));

    // Segment: the units of `mawqif segment`.
    let r = post_json(
        &s.url("/v1/segment"),
        &json!({ "texts": [article], "ids": ["a"] }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let segs = r.json()["results"][0]["units"].clone();
    let want = Segmenter::new().segment(&article);
    assert_eq!(segs.as_array().unwrap().len(), want.len());
    assert_eq!(segs[6]["text"], want[6].text);
    assert_eq!(segs[6]["start"], want[6].start);
    assert_eq!(segs[6]["file"], "a");

    // OpenAPI names every route and each error status the server gives.
    let r = get(&s.url("/openapi.json"));
    assert_eq!(r.status, 200);
    let api = r.json();
    assert_eq!(api["openapi"], "3.1.0");
    for path in [
        "/v1/classify",
        "/v1/segment",
        "/health",
        "/metrics",
        "/openapi.json",
        "/",
    ] {
        assert!(api["paths"][path].is_object(), "openapi lacks {path}");
    }
    for code in ["200", "400", "413", "429", "500", "503"] {
        assert!(
            api["paths"]["/v1/classify"]["post"]["responses"][code].is_object(),
            "openapi lacks classify {code}"
        );
    }
    assert!(
        api["paths"]["/v1/classify"]["post"]["responses"]["429"]["headers"]["Retry-After"]
            .is_object()
    );

    // The page and its files, served by the binary with a same-origin policy.
    let page = get(&s.url("/"));
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.body.contains("dir=\"rtl\""));
    assert!(page
        .csp
        .as_deref()
        .is_some_and(|c| c.contains("default-src 'self'")));
    for (path, kind) in [
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let r = get(&s.url(path));
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.content_type.starts_with(kind),
            "{path}: {}",
            r.content_type
        );
    }

    // Metrics count all of the above.
    let r = get(&s.url("/metrics"));
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/plain"));
    let text = r.body;
    for needle in [
        "mawqif_requests_total{route=\"classify\",status=\"200\"} 4",
        "mawqif_requests_total{route=\"segment\",status=\"200\"} 1",
        "mawqif_request_duration_seconds_count{route=\"classify\"} 4",
        "# TYPE mawqif_batch_sentences histogram",
        "# TYPE mawqif_sentences_per_second gauge",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    assert_eq!(metric(&text, "mawqif_ready"), Some(1.0));
    assert_eq!(metric(&text, "mawqif_sentences_total"), Some(150.0));
    assert_eq!(metric(&text, "mawqif_queue_sentences"), Some(0.0));
    assert!(metric(&text, "mawqif_batch_sentences_count").unwrap() >= 5.0);
    assert!(metric(&text, "mawqif_sentences_per_second").unwrap() > 0.0);
}

#[test]
fn every_bad_request_gets_a_clear_json_error() {
    let (_tmp, classifier) = tiny_classifier();
    let options = ServeOptions {
        limits: Limits {
            max_body_bytes: 64 * 1024,
            max_request_sentences: 60,
            ..Limits::default()
        },
        ..ServeOptions::default()
    };
    let s = ready_server(options, classifier);
    let classify = s.url("/v1/classify");
    let article = crate::common::article();
    // A single unit far over the tiny model's 64 tokens, with no punctuation.
    let run_on = ["كلمة"; 400].join(" ");
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "bad JSON",
            "application/json",
            b"{\"text\": ".to_vec(),
            400,
            "bad_json",
        ),
        (
            "empty body",
            "application/json",
            Vec::new(),
            400,
            "bad_json",
        ),
        (
            "wrong type",
            "application/json",
            br#"{"text": 7}"#.to_vec(),
            400,
            "bad_json",
        ),
        (
            "unknown field",
            "application/json",
            br#"{"txt": "x"}"#.to_vec(),
            400,
            "bad_json",
        ),
        (
            "non-UTF-8 JSON",
            "application/json",
            [b"{\"text\": \"".as_slice(), &[0xd8, 0xff], b"\"}"].concat(),
            400,
            "invalid_utf8",
        ),
        (
            "non-UTF-8 text",
            "text/plain",
            vec![0xd8, 0xa7, 0xff],
            400,
            "invalid_utf8",
        ),
        (
            "empty text",
            "application/json",
            br#"{"text": "  \n"}"#.to_vec(),
            400,
            "empty_text",
        ),
        (
            "blank plain text",
            "text/plain",
            b"\n \n".to_vec(),
            400,
            "empty_text",
        ),
        (
            "no texts",
            "application/json",
            br#"{"texts": []}"#.to_vec(),
            400,
            "empty_text",
        ),
        (
            "neither field",
            "application/json",
            br#"{}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "both fields",
            "application/json",
            br#"{"text": "a", "texts": ["b"]}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "ids do not match",
            "application/json",
            br#"{"texts": ["a", "b"], "ids": ["x"]}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "duplicate ids",
            "application/json",
            br#"{"texts": ["a", "b"], "ids": ["x", "x"]}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "run-on text",
            "application/json",
            json!({ "text": run_on }).to_string().into_bytes(),
            400,
            "sentence_too_long",
        ),
        (
            "too many sentences",
            "application/json",
            json!({ "texts": [article, article] })
                .to_string()
                .into_bytes(),
            413,
            "too_many_sentences",
        ),
    ];
    let prefix = "{\"text\": \"";
    let too_large = format!(
        "{prefix}{}a\"}}",
        "ا".repeat((64 * 1024 + 1 - prefix.len() - 3) / 2)
    );
    assert_eq!(too_large.len(), 64 * 1024 + 1);
    let replies = cases
        .iter()
        .map(|(what, content_type, body, status, kind)| {
            (*what, post(&classify, content_type, body), *status, *kind)
        })
        // One byte over the limit, written whole before reading the answer.
        .chain(std::iter::once((
            "body too large",
            post_raw(&classify, "application/json", too_large.as_bytes()),
            413,
            "body_too_large",
        )));
    for (what, r, status, kind) in replies {
        let (status, kind) = (&status, &kind);
        assert_eq!(r.status, *status, "{what}: {}", r.body);
        assert!(r.content_type.starts_with("application/json"), "{what}");
        assert_eq!(r.kind(), *kind, "{what}: {}", r.body);
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.len() > 10, "{what}: unhelpful message {message:?}");
        assert_eq!(r.json()["error"]["status"], *status);
    }
    // The same parsing guards /v1/segment.
    let r = post(&s.url("/v1/segment"), "application/json", b"[");
    assert_eq!((r.status, r.kind().as_str()), (400, "bad_json"));

    let r = get(&s.url("/nowhere"));
    assert_eq!((r.status, r.kind().as_str()), (404, "not_found"));
    let r = get(&classify);
    assert_eq!((r.status, r.kind().as_str()), (405, "method_not_allowed"));

    // The server is unharmed and counted each error by kind.
    let r = post_json(&classify, &json!({ "text": small_text(0) }));
    assert_eq!(r.status, 200, "{}", r.body);
    let text = get(&s.url("/metrics")).body;
    for (kind, n) in [
        ("bad_json", 5),
        ("invalid_utf8", 2),
        ("empty_text", 3),
        ("bad_request", 4),
        ("sentence_too_long", 1),
        ("too_many_sentences", 1),
        ("body_too_large", 1),
        ("not_found", 1),
        ("method_not_allowed", 1),
    ] {
        let needle = format!("mawqif_errors_total{{kind=\"{kind}\"}} {n}");
        assert!(text.contains(&needle), "metrics lack {needle}:\n{text}");
    }
}

#[test]
fn health_says_loading_until_the_model_is_set() {
    let server = Server::new(ServeOptions::default()).unwrap();
    let s = InProcess::start(server);
    let r = get(&s.url("/health"));
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "loading");
    let r = post_json(&s.url("/v1/classify"), &json!({ "text": small_text(0) }));
    assert_eq!((r.status, r.kind().as_str()), (503, "not_ready"));
    assert!(r.retry_after.is_some());
    // Segmenting needs no model.
    let r = post_json(&s.url("/v1/segment"), &json!({ "text": small_text(0) }));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        metric(&get(&s.url("/metrics")).body, "mawqif_ready"),
        Some(0.0)
    );

    let (_tmp, classifier) = tiny_classifier();
    s.server.set_model(classifier).unwrap();
    let r = get(&s.url("/health"));
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("ready"))
    );
    let r = post_json(&s.url("/v1/classify"), &json!({ "text": small_text(0) }));
    assert_eq!(r.status, 200, "{}", r.body);
}

/// While the model is stuck on a batch: later requests queue and are merged
/// into one batch, /health answers at once, a full queue answers 429 with
/// Retry-After, and a request past the timeout gets 503.
#[test]
fn queueing_merging_backpressure_and_timeouts() {
    let model = Gated::default();
    let options = ServeOptions {
        limits: Limits {
            max_request_sentences: 3,
            request_timeout: Duration::from_secs(30),
            ..Limits::default()
        },
        batching: BatchOptions {
            max_batch_sentences: 32,
            max_batch_tokens: 8192,
            max_queue_sentences: 24,
            max_queue_wait: Duration::from_secs(20),
        },
    };
    let s = ready_server(options, model.clone());
    let url = s.url("/v1/classify");
    // Eight requests of three sentences: the first batch blocks at the gate
    // with request 0 in it; the others queue behind it (24 sentences in all).
    let mut clients = Vec::new();
    for k in 0..8 {
        let url = url.clone();
        clients.push(std::thread::spawn(move || {
            post_json(
                &url,
                &json!({ "text": small_text(k), "id": format!("r{k}") }),
            )
        }));
        if k == 0 {
            // Request 0 alone is in the model before the others arrive.
            assert!(wait_until(Duration::from_secs(10), || model.entered() == 1));
        }
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            metric(&get(&s.url("/metrics")).body, "mawqif_queue_sentences") == Some(24.0)
        }),
        "requests did not all queue"
    );
    // Busy, yet /health answers, and says how much is queued.
    let started = Instant::now();
    let h = get(&s.url("/health"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["queue_sentences"], 24);
    // Full: 429 with a Retry-After, at once.
    let r = post_json(&url, &json!({ "text": small_text(99) }));
    assert_eq!(
        (r.status, r.kind().as_str()),
        (429, "queue_full"),
        "{}",
        r.body
    );
    let retry: u64 = r.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));

    model.open();
    for (k, c) in clients.into_iter().enumerate() {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200, "request {k}: {}", r.body);
        assert_eq!(r.json()["results"][0]["id"], format!("r{k}"));
        assert_eq!(r.json()["results"][0]["units"].as_array().unwrap().len(), 3);
    }
    // Request 0 ran alone; the seven that queued behind it ran as one batch.
    let batches = model.batches();
    assert_eq!(batches.len(), 2, "{batches:?}");
    assert_eq!(batches[0].len(), 3);
    assert_eq!(batches[1].len(), 21);
    let text = get(&s.url("/metrics")).body;
    assert!(
        text.contains("mawqif_batch_requests_bucket{le=\"8\"} 2"),
        "{text}"
    );
    assert_eq!(metric(&text, "mawqif_batch_requests_sum"), Some(8.0));
    assert!(text.contains("mawqif_errors_total{kind=\"queue_full\"} 1"));
    s.stop();

    // A timeout: the model never opens within the limit.
    let model = Gated::default();
    let options = ServeOptions {
        limits: Limits {
            request_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        batching: BatchOptions {
            max_queue_wait: Duration::from_millis(300),
            ..BatchOptions::default()
        },
    };
    let s = ready_server(options, model.clone());
    let r = post_json(&s.url("/v1/classify"), &json!({ "text": small_text(1) }));
    assert_eq!(
        (r.status, r.kind().as_str()),
        (503, "timeout"),
        "{}",
        r.body
    );
    assert!(r.retry_after.is_some());
    model.open();
    let r = post_json(&s.url("/v1/classify"), &json!({ "text": small_text(2) }));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_failing_batch_is_a_500_for_its_requests_only() {
    let model = Gated::default();
    model.open();
    *model.inner.poison.lock().unwrap() = Some("سطر مسموم.".to_string());
    let s = ready_server(ServeOptions::default(), model);
    let r = post_json(&s.url("/v1/classify"), &json!({ "text": "سطر مسموم." }));
    assert_eq!(
        (r.status, r.kind().as_str()),
        (500, "internal"),
        "{}",
        r.body
    );
    assert!(r.body.contains("cannot read"), "{}", r.body);
    let r = post_json(&s.url("/v1/classify"), &json!({ "text": small_text(3) }));
    assert_eq!(r.status, 200, "{}", r.body);
    let text = get(&s.url("/metrics")).body;
    assert_eq!(metric(&text, "mawqif_batch_failures_total"), Some(1.0));
}

/// A bounded run of the real binary: 1, 8 and 64 concurrent clients, each
/// sending whole articles; nothing but 200 (or a deliberate 429) comes back.
#[test]
fn concurrent_clients_get_only_answers_or_deliberate_429s() {
    let (_tmp, dir) = crate::common::tiny_model_dir();
    let server = ServeProcess::start(&dir, &["--threads", "2"]);
    let body = json!({ "text": crate::common::article() }).to_string();
    for clients in [1usize, 8, 64] {
        let requests_each = if clients == 64 { 2 } else { 4 };
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let url = server.url("/v1/classify");
                let body = body.clone();
                std::thread::spawn(move || {
                    (0..requests_each)
                        .map(|_| post(&url, "application/json", body.as_bytes()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let replies: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(replies.len(), clients * requests_each);
        for r in &replies {
            match r.status {
                200 => assert_eq!(
                    r.json()["results"][0]["units"].as_array().unwrap().len(),
                    49
                ),
                429 => assert!(r.retry_after.is_some()),
                other => panic!("{clients} clients: status {other}: {}", r.body),
            }
        }
        assert!(replies.iter().any(|r| r.status == 200));
    }
    let text = get(&server.url("/metrics")).body;
    assert_eq!(metric(&text, "mawqif_queue_sentences"), Some(0.0));
    assert!(!server.stderr_text().contains("panicked"));
}

/// SIGTERM while requests are queued: the server stops accepting, every
/// request already in finishes with 200, and the process exits 0.
#[test]
fn sigterm_during_load_finishes_in_flight_requests_and_exits_0() {
    let (_tmp, dir) = crate::common::tiny_model_dir();
    // Small batches: the queue drains slowly enough to be caught non-empty.
    let mut server = ServeProcess::start(
        &dir,
        &[
            "--threads",
            "1",
            "--batch-size",
            "4",
            "--max-queue-sentences",
            "100000",
            "--max-request-sentences",
            "2000",
            // On a loaded machine the measured speed drops, and the
            // admission check (work that cannot finish in time gets 429)
            // once refused one of the 8 requests; this test is about
            // SIGTERM, not admission, so give the queue room.
            "--timeout",
            "600",
            "--max-queue-wait",
            "600",
        ],
    );
    let big = json!({ "text": crate::common::article().repeat(5) }).to_string();
    let clients = 8;
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let url = server.url("/v1/classify");
            let body = big.clone();
            std::thread::spawn(move || {
                let r = post(&url, "application/json", body.as_bytes());
                (r, Instant::now())
            })
        })
        .collect();
    // Wait until every request is queued, then signal while work remains.
    let metrics_url = server.url("/metrics");
    let mut queued_at_signal = 0.0;
    let mut last_metrics = String::new();
    let all_in = wait_until(Duration::from_secs(60), || {
        let text = get(&metrics_url).body;
        let queued = metric(&text, "mawqif_queue_requests").unwrap_or(0.0);
        let done = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("mawqif_requests_total{route=\"classify\",status=\"200\"} ")
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        queued_at_signal = metric(&text, "mawqif_queue_sentences").unwrap_or(0.0);
        let all = queued + done >= clients as f64;
        last_metrics = text;
        all
    });
    assert!(
        all_in,
        "requests never all queued; last /metrics:\n{last_metrics}\nstderr:\n{}",
        server.stderr_text()
    );
    server.signal("TERM");
    let signalled = Instant::now();
    eprintln!("SIGTERM with {queued_at_signal} sentences queued");
    assert!(
        queued_at_signal > 500.0,
        "too little work left at SIGTERM ({queued_at_signal} sentences) for the test to mean anything"
    );

    let status = server.wait(Duration::from_secs(120));
    let mut finished_after_signal = 0;
    for h in handles {
        let (r, done) = h.join().unwrap();
        assert_eq!(r.status, 200, "in-flight request lost: {}", r.body);
        assert_eq!(
            r.json()["results"][0]["units"].as_array().unwrap().len(),
            245
        );
        if done > signalled {
            finished_after_signal += 1;
        }
    }
    assert!(
        finished_after_signal > 0,
        "nothing was in flight at SIGTERM"
    );
    let status = status.expect("the server did not exit after SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; stderr:\n{}",
        server.stderr_text()
    );
    let log = server.stderr_text();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    // Stopped means stopped: the port no longer accepts connections.
    assert!(std::net::TcpStream::connect(server.base.trim_start_matches("http://")).is_err());
}

#[test]
fn serve_refuses_bad_flags_and_a_missing_model_cleanly() {
    let o = crate::common::mawqif(&[
        "serve",
        "--port",
        "0",
        "--max-request-sentences",
        "5000",
        "--max-queue-sentences",
        "100",
    ]);
    assert!(!o.status.success());
    let err = crate::common::stderr(&o);
    assert!(err.contains("could never be queued"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let o = crate::common::mawqif(&[
        "serve",
        "--port",
        "0",
        "--timeout",
        "10",
        "--max-queue-wait",
        "20",
    ]);
    assert!(!o.status.success());
    let err = crate::common::stderr(&o);
    assert!(err.contains("queue wait"), "{err}");

    let o = crate::common::mawqif(&["serve", "--port", "0", "--model", "/nonexistent/model"]);
    assert!(!o.status.success());
    let err = crate::common::stderr(&o);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The page's legend quotes LABELS.md (from ../shared, beside the repository).
#[test]
fn page_legend_matches_labels_md() {
    let path = std::path::Path::new("../shared/LABELS.md");
    let Ok(labels) = std::fs::read_to_string(path) else {
        eprintln!("skipping: {} not found", path.display());
        return;
    };
    let (_tmp, classifier) = tiny_classifier();
    let s = ready_server(ServeOptions::default(), classifier);
    let page = get(&s.url("/")).body;
    let mut found = 0;
    for line in labels.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `label` | short | what it is |
        if cells.len() >= 4 && cells[1].starts_with('`') && cells[1] != "`label`" {
            let label = cells[1].trim_matches('`');
            if !["report", "quotation", "endorsement", "opinion"].contains(&label) {
                continue;
            }
            let definition = format!("{}: {}", cells[2], cells[3]);
            assert!(page.contains(&definition), "legend lacks {definition:?}");
            found += 1;
        }
    }
    assert_eq!(found, 4, "LABELS.md's table was not found");
}
