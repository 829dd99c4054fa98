//! Routes: request parsing and validation, the classify and segment
//! handlers, health, metrics, and the layer that counts every request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::encode::OVERLONG_FACTOR;
use crate::report::{ArticleProfile, LabelledUnit, SegmentRecord, UNSURE_BELOW};
use crate::text::{Segment, Segmenter};

use super::batcher::{Job, Rejected};
use super::error::{ApiError, ErrorKind};
use super::{json_response, page, AppState, Limits, ServeModel};

pub(super) fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.options.limits.max_body_bytes;
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/favicon.svg", get(page::favicon))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/classify", post(classify))
        .route("/v1/segment", post(segment))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(Arc::clone(&state), track))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The request body of `/v1/classify` and `/v1/segment`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextsRequest {
    text: Option<String>,
    id: Option<String>,
    texts: Option<Vec<String>>,
    ids: Option<Vec<String>>,
}

/// One text of a request and the name its units carry (`file` in the JSONL contract).
#[derive(Debug, Clone, PartialEq)]
struct NamedText {
    id: String,
    text: String,
}

/// The texts of a request body: JSON (`text` or `texts`, with optional
/// ids), or the text itself when the content type is `text/plain`.
fn parse_texts(headers: &HeaderMap, body: &[u8]) -> Result<Vec<NamedText>, ApiError> {
    let body = std::str::from_utf8(body).map_err(|e| ApiError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    let plain = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/plain")
        });
    if plain {
        return check_texts(vec![NamedText {
            id: "0".into(),
            text: body.to_string(),
        }]);
    }
    if body.trim().is_empty() {
        return Err(ApiError::BadJson(
            "the body is empty; send {\"text\": \"...\"} or {\"texts\": [...]}".into(),
        ));
    }
    let request: TextsRequest =
        serde_json::from_str(body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let texts = match request {
        TextsRequest {
            text: Some(text),
            texts: None,
            ids: None,
            id,
        } => vec![NamedText {
            id: id.unwrap_or_else(|| "0".into()),
            text,
        }],
        TextsRequest {
            texts: Some(texts),
            text: None,
            id: None,
            ids,
        } => {
            if texts.is_empty() {
                return Err(ApiError::EmptyText("\"texts\" is an empty list".into()));
            }
            let ids = match ids {
                Some(ids) if ids.len() != texts.len() => {
                    return Err(ApiError::BadRequest(format!(
                        "\"ids\" has {} entries for {} texts",
                        ids.len(),
                        texts.len()
                    )))
                }
                Some(ids) => ids,
                None => (0..texts.len()).map(|i| i.to_string()).collect(),
            };
            ids.into_iter()
                .zip(texts)
                .map(|(id, text)| NamedText { id, text })
                .collect()
        }
        TextsRequest {
            text: None,
            texts: None,
            ..
        } => {
            return Err(ApiError::BadRequest(
                "give \"text\" (one string) or \"texts\" (a list of strings)".into(),
            ))
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give either \"text\" with an optional \"id\", or \"texts\" with optional \"ids\", not a mix".into(),
            ))
        }
    };
    check_texts(texts)
}

fn check_texts(texts: Vec<NamedText>) -> Result<Vec<NamedText>, ApiError> {
    for (i, t) in texts.iter().enumerate() {
        if t.text.trim().is_empty() {
            return Err(ApiError::EmptyText(if texts.len() == 1 {
                "the text is empty: send a text with at least one sentence".into()
            } else {
                format!("text {i} (id {:?}) is empty", t.id)
            }));
        }
        if t.id.is_empty() {
            return Err(ApiError::BadRequest(format!("text {i} has an empty id")));
        }
        if texts[..i].iter().any(|o| o.id == t.id) {
            return Err(ApiError::BadRequest(format!(
                "id {:?} is given twice; ids name the results, so they must differ",
                t.id
            )));
        }
    }
    Ok(texts)
}

/// A request's texts cut into units, with what the batcher needs.
struct Prepared {
    texts: Vec<(NamedText, Vec<Segment>, Vec<String>)>,
    job: Job,
}

/// Segment, count tokens, and refuse what breaks the limits (runs on the
/// blocking pool: it is CPU work proportional to the body).
fn prepare(
    model: &dyn ServeModel,
    texts: Vec<NamedText>,
    limits: &Limits,
) -> Result<Prepared, ApiError> {
    let segmenter = Segmenter::new();
    let segmented: Vec<(NamedText, Vec<Segment>)> = texts
        .into_iter()
        .map(|t| {
            let s = segmenter.segment(&t.text);
            (t, s)
        })
        .collect();
    let total: usize = segmented.iter().map(|(_, s)| s.len()).sum();
    if total > limits.max_request_sentences {
        return Err(ApiError::TooManySentences {
            sentences: total,
            limit: limits.max_request_sentences,
        });
    }
    let mut units = Vec::with_capacity(total);
    let mut starts_text = Vec::with_capacity(total);
    for (_, segments) in &segmented {
        for (i, s) in segments.iter().enumerate() {
            units.push(s.text.clone());
            starts_text.push(i == 0);
        }
    }
    let refs: Vec<&str> = units.iter().map(String::as_str).collect();
    let sizes = model
        .unit_sizes(&refs)
        .map_err(|e| ApiError::Internal(format!("counting tokens: {e}")))?;
    let mut costs = Vec::with_capacity(total);
    let mut texts = Vec::with_capacity(segmented.len());
    let mut k = 0;
    for (named, segments) in segmented {
        let mut warnings = Vec::new();
        if segments.is_empty() {
            warnings.push("no sentence with Arabic text found".to_string());
        }
        for s in &segments {
            let tokens = sizes.tokens.get(k).copied().unwrap_or(0);
            if let Some(limit) = sizes.limit.filter(|&l| tokens > l) {
                let preview: String = s.text.chars().take(40).collect();
                if !limits.allow_long && tokens > OVERLONG_FACTOR * limit {
                    return Err(ApiError::SentenceTooLong {
                        id: named.id.clone(),
                        index: s.index,
                        preview,
                        tokens,
                        limit: OVERLONG_FACTOR * limit,
                    });
                }
                warnings.push(format!(
                    "sentence {} ({preview}…) has {tokens} tokens; truncated to {limit}",
                    s.index
                ));
            }
            costs.push(sizes.cost(k));
            k += 1;
        }
        texts.push((named, segments, warnings));
    }
    Ok(Prepared {
        texts,
        job: Job::new(units, starts_text, costs),
    })
}

#[derive(Serialize)]
struct ClassifyResponse {
    model: String,
    /// Labels whose probability is under this are worth checking by hand
    /// (the page marks them, as `classify --format table` does).
    unsure_below: f32,
    results: Vec<ClassifiedText>,
}

#[derive(Serialize)]
struct ClassifiedText {
    id: String,
    units: Vec<LabelledUnit>,
    profile: ArticleProfile,
    warnings: Vec<String>,
}

/// The body, or the error its extraction gave (413 past the limit).
fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {rejection}"))
        }
    })
}

async fn classify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let limits = state.options.limits.clone();
    let body = body_bytes(body, limits.max_body_bytes)?;
    let texts = parse_texts(&headers, &body)?;
    drop(body);
    let ready = state.ready.get().ok_or(ApiError::NotReady)?;
    let model = Arc::clone(&ready.model);
    let work = async {
        let prepared = {
            let limits = limits.clone();
            tokio::task::spawn_blocking(move || prepare(model.as_ref(), texts, &limits))
                .await
                .map_err(|e| ApiError::Internal(format!("preparing the request: {e}")))??
        };
        let Prepared { texts, job } = prepared;
        let receiver = ready.queue.submit(job).map_err(|r| match r {
            Rejected::Full {
                queued,
                retry_after,
            } => ApiError::QueueFull {
                queued,
                retry_after,
            },
            Rejected::Closed => ApiError::ShuttingDown,
        })?;
        let scores = receiver
            .await
            .map_err(|_| ApiError::Internal("the batching thread stopped".into()))?
            .map_err(|e| ApiError::Internal(format!("classifying: {e}")))?;
        Ok::<_, ApiError>((texts, scores))
    };
    let (texts, scores) = tokio::time::timeout(limits.request_timeout, work)
        .await
        .map_err(|_| ApiError::Timeout {
            limit: limits.request_timeout,
        })??;
    let mut scores = scores.into_iter();
    let results = texts
        .into_iter()
        .map(|(named, segments, warnings)| {
            let units: Vec<LabelledUnit> = segments
                .iter()
                .zip(scores.by_ref())
                .map(|(s, sc)| LabelledUnit::new(&named.id, s, sc))
                .collect();
            let profile = ArticleProfile::new(&named.id, &ready.labels, &units);
            ClassifiedText {
                id: named.id,
                units,
                profile,
                warnings,
            }
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &ClassifyResponse {
            model: ready.name.clone(),
            unsure_below: UNSURE_BELOW,
            results,
        },
    ))
}

#[derive(Serialize)]
struct SegmentResponse {
    results: Vec<SegmentedText>,
}

#[derive(Serialize)]
struct SegmentedText {
    id: String,
    units: Vec<SegmentRecord>,
}

async fn segment(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body, state.options.limits.max_body_bytes)?;
    let texts = parse_texts(&headers, &body)?;
    drop(body);
    let results = tokio::task::spawn_blocking(move || {
        let segmenter = Segmenter::new();
        texts
            .into_iter()
            .map(|t| SegmentedText {
                units: segmenter
                    .segment(&t.text)
                    .into_iter()
                    .map(|s| SegmentRecord {
                        file: t.id.clone(),
                        index: s.index,
                        start: s.start,
                        end: s.end,
                        text: s.text,
                    })
                    .collect(),
                id: t.id,
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("segmenting: {e}")))?;
    Ok(json_response(StatusCode::OK, &SegmentResponse { results }))
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "draining"}),
        );
    }
    match state.ready.get() {
        Some(ready) => json_response(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ready",
                "model": ready.name,
                "queue_sentences": ready.queue.pending(),
            }),
        ),
        None => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "loading"}),
        ),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(state.ready.get().is_some());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn openapi() -> Response {
    json_response(StatusCode::OK, &super::openapi())
}

/// The metrics label of a path: a fixed set, so clients cannot grow it.
fn route_name(path: &str) -> &'static str {
    match path {
        "/" | "/app.js" | "/style.css" | "/favicon.svg" => "page",
        "/health" => "health",
        "/metrics" => "metrics",
        "/openapi.json" => "openapi",
        "/v1/classify" => "classify",
        "/v1/segment" => "segment",
        _ => "other",
    }
}

/// Counts a request as in flight while it runs; one dropped before its
/// response (the client went away) is recorded as 499.
struct InFlight<'a> {
    state: &'a AppState,
    route: &'static str,
    started: Instant,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.done {
            self.state.metrics.record_request(
                self.route,
                499,
                Some("client_closed"),
                self.started.elapsed().as_secs_f64(),
            );
        }
    }
}

async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = route_name(request.uri().path());
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut guard = InFlight {
        state: &state,
        route,
        started: Instant::now(),
        done: false,
    };
    let response = next.run(request).await;
    guard.done = true;
    let kind = response.extensions().get::<ErrorKind>().map(|k| k.0);
    state.metrics.record_request(
        route,
        response.status().as_u16(),
        kind,
        guard.started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h
    }

    fn kind(body: &[u8]) -> &'static str {
        match parse_texts(&json_headers(), body) {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn request_bodies_are_checked() {
        let ok = parse_texts(&json_headers(), br#"{"text": "abc", "id": "a1"}"#).unwrap();
        assert_eq!(ok[0].id, "a1");
        let ok = parse_texts(&json_headers(), r#"{"texts": ["أ", "ب"]}"#.as_bytes()).unwrap();
        assert_eq!(
            ok.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["0", "1"]
        );
        for (body, expected) in [
            (&b"{\"text\": "[..], "bad_json"),
            (b"", "bad_json"),
            (b"[1, 2]", "bad_json"),
            (br#"{"text": 5}"#, "bad_json"),
            (br#"{"txt": "a"}"#, "bad_json"),
            (&[b'{', 0xff, b'}'], "invalid_utf8"),
            (br#"{"text": "  \n "}"#, "empty_text"),
            (br#"{"texts": []}"#, "empty_text"),
            (br#"{"texts": ["a", " "]}"#, "empty_text"),
            (br#"{}"#, "bad_request"),
            (br#"{"text": "a", "texts": ["b"]}"#, "bad_request"),
            (br#"{"text": "a", "ids": ["b"]}"#, "bad_request"),
            (br#"{"texts": ["a", "b"], "ids": ["x"]}"#, "bad_request"),
            (
                br#"{"texts": ["a", "b"], "ids": ["x", "x"]}"#,
                "bad_request",
            ),
            (br#"{"text": "a", "id": ""}"#, "bad_request"),
        ] {
            assert_eq!(kind(body), expected, "{}", String::from_utf8_lossy(body));
        }
        let mut plain = HeaderMap::new();
        plain.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        assert_eq!(parse_texts(&plain, "نص".as_bytes()).unwrap()[0].text, "نص");
        assert_eq!(
            parse_texts(&plain, b"\xd8").unwrap_err().kind(),
            "invalid_utf8"
        );
    }
}
