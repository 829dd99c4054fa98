//! What can go wrong when starting a server ([`ServeError`]) and in one
//! request ([`ApiError`], always answered as JSON with a status and a kind).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Setting up or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid server option: {0}")]
    BadOption(String),

    #[error("the model is already set; a server serves one model")]
    ModelAlreadySet,

    #[error("cannot start the batching thread")]
    Thread(#[source] std::io::Error),

    #[error("serving HTTP")]
    Io(#[from] std::io::Error),
}

/// Why one request was refused or failed. Each variant has its HTTP
/// status and a stable `kind` that clients and `/metrics` use.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    BadJson(String),

    #[error("request body is not valid UTF-8 (first bad byte at offset {offset})")]
    InvalidUtf8 { offset: usize },

    #[error("{0}")]
    EmptyText(String),

    #[error("{0}")]
    BadRequest(String),

    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },

    #[error(
        "the texts hold {sentences} sentences; one request may hold at most {limit}: split it"
    )]
    TooManySentences { sentences: usize, limit: usize },

    #[error(
        "text {id:?}, sentence {index} ({preview}…) has {tokens} tokens, more than {limit}: \
         this is not one sentence (is the text unsegmented?)"
    )]
    SentenceTooLong {
        id: String,
        index: usize,
        preview: String,
        tokens: usize,
        limit: usize,
    },

    #[error("the queue is full ({queued} sentences waiting); retry after {} s", retry_after.as_secs())]
    QueueFull {
        queued: usize,
        retry_after: Duration,
    },

    #[error("the request was not done within {} s", limit.as_secs_f64())]
    Timeout { limit: Duration },

    #[error("the model is still loading; retry shortly (GET /health says when it is ready)")]
    NotReady,

    #[error("the server is shutting down")]
    ShuttingDown,

    #[error("no such endpoint; see GET /openapi.json")]
    NotFound,

    #[error("method not allowed on this endpoint; see GET /openapi.json")]
    MethodNotAllowed,

    #[error("internal error: {0}")]
    Internal(String),
}

/// The `kind` of an error response, left on the response so that the
/// metrics layer can count errors by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorKind(pub &'static str);

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadJson(_)
            | ApiError::InvalidUtf8 { .. }
            | ApiError::EmptyText(_)
            | ApiError::BadRequest(_)
            | ApiError::SentenceTooLong { .. } => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } | ApiError::TooManySentences { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout { .. } | ApiError::NotReady | ApiError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadJson(_) => "bad_json",
            ApiError::InvalidUtf8 { .. } => "invalid_utf8",
            ApiError::EmptyText(_) => "empty_text",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::TooManySentences { .. } => "too_many_sentences",
            ApiError::SentenceTooLong { .. } => "sentence_too_long",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::Timeout { .. } => "timeout",
            ApiError::NotReady => "not_ready",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Seconds a client should wait before trying again, where waiting helps.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::QueueFull { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            ApiError::NotReady | ApiError::Timeout { .. } => Some(1),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({
            "error": {
                "kind": self.kind(),
                "status": status.as_u16(),
                "message": self.to_string(),
            }
        });
        let mut response = super::json_response(status, &body);
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(ErrorKind(self.kind()));
        response
    }
}
