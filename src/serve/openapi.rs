//! The OpenAPI 3.1 description of the HTTP API, served at `/openapi.json`.
//! Written by hand next to the handlers; a test checks that it names every
//! route and every error status the server answers with.

use serde_json::{json, Value};

/// The OpenAPI document.
pub fn openapi() -> Value {
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        })
    };
    let retry = json!({
        "Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}
    });
    let mut busy = error(
        "Queue full: too many sentences waiting, or more work than can be done before the timeout (`queue_full`)",
    );
    busy["headers"] = retry.clone();
    let mut unavailable = error(
        "Not ready: the model is loading (`not_ready`), the request took longer than the \
         server's timeout (`timeout`), or the server is shutting down (`shutting_down`)",
    );
    unavailable["headers"] = retry;
    let text_errors = |extra: Vec<(&str, Value)>| {
        let mut r = json!({
            "400": error("Bad request: invalid JSON (`bad_json`), a body that is not UTF-8 \
                          (`invalid_utf8`), an empty text (`empty_text`), inconsistent fields \
                          (`bad_request`) or a unit far over the model's length (`sentence_too_long`)"),
            "413": error("The body is over the size limit (`body_too_large`) or holds more \
                          sentences than one request may (`too_many_sentences`)"),
        });
        for (code, v) in extra {
            r[code] = v;
        }
        r
    };
    let request_body = json!({
        "required": true,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/TextsRequest"},
                "examples": {
                    "one": {"value": {"text": "وقال الوزير: «لن نتراجع عن هذا القرار».", "id": "a1"}},
                    "several": {"value": {"texts": ["وصل الوفد إلى العاصمة.", "رحّبت الأحزاب بالاتفاق."], "ids": ["x", "y"]}}
                }},
            "text/plain": {"schema": {"type": "string", "description": "One text, UTF-8; its id is \"0\""}}
        }
    });
    let mut classify_responses = text_errors(vec![
        ("429", busy),
        ("503", unavailable),
        (
            "500",
            error("The model failed on the batch that held this request (`internal`)"),
        ),
    ]);
    classify_responses["200"] = json!({
        "description": "Each text's units with label and scores (the JSONL contract of `mawqif classify`, `file` being the text's id) and its profile",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ClassifyResponse"}}}
    });
    let mut segment_responses = text_errors(vec![]);
    segment_responses["200"] = json!({
        "description": "Each text's units with byte spans (the JSONL of `mawqif segment`)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SegmentResponse"}}}
    });
    let scores = json!({
        "type": "object",
        "required": ["report", "quotation", "endorsement", "opinion"],
        "properties": {
            "report": {"type": "number"}, "quotation": {"type": "number"},
            "endorsement": {"type": "number"}, "opinion": {"type": "number"}
        }
    });
    let counts = json!({
        "type": "object",
        "required": ["report", "quotation", "endorsement", "opinion"],
        "properties": {
            "report": {"type": "integer"}, "quotation": {"type": "integer"},
            "endorsement": {"type": "integer"}, "opinion": {"type": "integer"}
        }
    });
    let span = |extra: Value| {
        let mut props = json!({
            "file": {"type": "string", "description": "The text's id"},
            "index": {"type": "integer", "description": "Position among the text's units, from 0"},
            "start": {"type": "integer", "description": "Byte offset of the unit in the UTF-8 text"},
            "end": {"type": "integer", "description": "Byte offset just past the unit"},
            "text": {"type": "string"}
        });
        let mut required: Vec<String> = ["file", "index", "start", "end", "text"]
            .map(String::from)
            .to_vec();
        if let Some(obj) = extra.as_object() {
            for (k, v) in obj {
                props[k] = v.clone();
                required.push(k.clone());
            }
        }
        json!({"type": "object", "required": required, "properties": props})
    };
    let strongest = json!({
        "type": ["object", "null"],
        "properties": {"index": {"type": "integer"}, "score": {"type": "number"}, "text": {"type": "string"}}
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mawqif",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Labels each sentence of Arabic news as report, quotation, endorsement or opinion. \
                            Sentences of concurrent requests are batched together."
        },
        "paths": {
            "/v1/classify": {"post": {
                "summary": "Label every sentence of one or more texts",
                "operationId": "classify",
                "requestBody": request_body.clone(),
                "responses": classify_responses
            }},
            "/v1/segment": {"post": {
                "summary": "Cut texts into sentence units, without labels",
                "operationId": "segment",
                "requestBody": request_body,
                "responses": segment_responses
            }},
            "/health": {"get": {
                "summary": "Readiness: 200 once the model is loaded, 503 while loading or shutting down",
                "operationId": "health",
                "responses": {
                    "200": {"description": "Ready", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
                    "503": {"description": "Loading or draining", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}
                }
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics: requests, errors by kind, latency, batch sizes, queue depth, sentences/s",
                "operationId": "metrics",
                "responses": {"200": {"description": "Prometheus text format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}}}
            }},
            "/openapi.json": {"get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }},
            "/": {"get": {
                "summary": "The web page: paste or upload an article and see its sentences coloured by label",
                "operationId": "page",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}
            }}
        },
        "components": {"schemas": {
            "TextsRequest": {
                "type": "object",
                "description": "Either `text` (with an optional `id`) or `texts` (with optional `ids`, one per text, all different). Ids default to \"0\", \"1\", …",
                "additionalProperties": false,
                "properties": {
                    "text": {"type": "string", "minLength": 1},
                    "id": {"type": "string", "minLength": 1},
                    "texts": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                    "ids": {"type": "array", "items": {"type": "string", "minLength": 1}}
                }
            },
            "Scores": scores,
            "Counts": counts,
            "LabelledUnit": span(json!({
                "label": {"type": "string", "enum": ["report", "quotation", "endorsement", "opinion"]},
                "scores": {"$ref": "#/components/schemas/Scores"}
            })),
            "SegmentRecord": span(json!({})),
            "ArticleProfile": {
                "type": "object",
                "description": "Schema mawqif-profile/1: how much of the text is each label",
                "properties": {
                    "schema": {"type": "string", "const": crate::report::PROFILE_SCHEMA},
                    "file": {"type": "string"},
                    "sentences": {"type": "integer"},
                    "counts": {"$ref": "#/components/schemas/Counts"},
                    "shares": {"$ref": "#/components/schemas/Scores"},
                    "mean_scores": {"$ref": "#/components/schemas/Scores"},
                    "strongest_endorsement": strongest.clone(),
                    "strongest_opinion": strongest
                }
            },
            "ClassifyResponse": {
                "type": "object",
                "required": ["model", "unsure_below", "results"],
                "properties": {
                    "model": {"type": "string"},
                    "unsure_below": {
                        "type": "number",
                        "description": "A unit whose highest score is under this is worth checking by hand: on real news, the default head's labels under it were right about 62% of the time, the others 93%."
                    },
                    "results": {"type": "array", "items": {
                        "type": "object",
                        "required": ["id", "units", "profile", "warnings"],
                        "properties": {
                            "id": {"type": "string"},
                            "units": {"type": "array", "items": {"$ref": "#/components/schemas/LabelledUnit"}},
                            "profile": {"$ref": "#/components/schemas/ArticleProfile"},
                            "warnings": {"type": "array", "items": {"type": "string"}}
                        }
                    }}
                }
            },
            "SegmentResponse": {
                "type": "object",
                "properties": {"results": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "units": {"type": "array", "items": {"$ref": "#/components/schemas/SegmentRecord"}}
                    }
                }}}
            },
            "Health": {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "enum": ["ready", "loading", "draining"]},
                    "model": {"type": "string"},
                    "queue_sentences": {"type": "integer"}
                }
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {
                    "type": "object",
                    "required": ["kind", "status", "message"],
                    "properties": {
                        "kind": {"type": "string", "enum": [
                            "bad_json", "invalid_utf8", "empty_text", "bad_request", "body_too_large",
                            "too_many_sentences", "sentence_too_long", "queue_full", "timeout",
                            "not_ready", "shutting_down", "not_found", "method_not_allowed", "internal"
                        ]},
                        "status": {"type": "integer"},
                        "message": {"type": "string", "description": "What is wrong and what to do"}
                    }
                }}
            }
        }}
    })
}
