//! Inputs as documents: whole text files, or records of a JSONL or CSV
//! export with an id and a text field. A bad file or record is an error for
//! that input alone: readers yield it and go on.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{MawqifError, Result};
use crate::text::input::read_text;

/// How inputs are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// Each file is one document.
    #[default]
    Text,
    /// One JSON object per line.
    Jsonl,
    /// A header row, then one record per row.
    Csv,
    /// CLEF CheckThat! TSV: a header row (`sentence_id<TAB>sentence[<TAB>label]`),
    /// then one sentence per row, unquoted. Each row is one sentence: it is
    /// classified as it is, not segmented.
    CheckThat,
}

impl InputFormat {
    /// Whether each record is one sentence to classify as it is.
    pub fn is_sentence_per_record(self) -> bool {
        self == InputFormat::CheckThat
    }
}

/// Which fields of a record hold what.
#[derive(Debug, Clone)]
pub struct RecordFields {
    pub id: String,
    pub text: String,
    /// Fields copied to every output unit of the record.
    pub keep: Vec<String>,
}

impl Default for RecordFields {
    fn default() -> Self {
        Self {
            id: "id".into(),
            text: "text".into(),
            keep: Vec::new(),
        }
    }
}

/// One text to classify.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The file it came from (`-` for stdin).
    pub source: String,
    /// The record id; None for a whole text file.
    pub id: Option<String>,
    pub text: String,
    /// The kept fields of a record.
    pub fields: Option<Map<String, Value>>,
}

impl Document {
    /// What identifies this document for sharding and resuming: the record
    /// id, or the file name.
    pub fn key(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.source)
    }
}

/// An input that could not be read, and why.
#[derive(Debug)]
pub struct InputFailure {
    pub source: String,
    /// The record (id, or `line N`) when the failure is one record's.
    pub record: Option<String>,
    /// Boxed: failures are rare and travel inside every `Result` item.
    pub error: Box<MawqifError>,
}

impl std::fmt::Display for InputFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let message = self.error.to_string();
        // Most errors name their file already; say which input the others are.
        if message.contains(&self.source) {
            return f.write_str(&message);
        }
        match &self.record {
            Some(r) => write!(f, "{} ({r}): {message}", self.source),
            None => write!(f, "{}: {message}", self.source),
        }
    }
}

pub type Item = std::result::Result<Document, InputFailure>;

/// The documents of `path` (`-` is stdin), in order.
pub fn documents(
    path: &Path,
    format: InputFormat,
    fields: &RecordFields,
) -> Box<dyn Iterator<Item = Item>> {
    let source = path.display().to_string();
    let fail = |error: MawqifError| -> Box<dyn Iterator<Item = Item>> {
        Box::new(std::iter::once(Err(InputFailure {
            source: path.display().to_string(),
            record: None,
            error: Box::new(error),
        })))
    };
    match format {
        InputFormat::Text => Box::new(std::iter::once(
            read_text(path)
                .map(|text| Document {
                    source: source.clone(),
                    id: None,
                    text,
                    fields: None,
                })
                .map_err(|error| InputFailure {
                    source,
                    record: None,
                    error: Box::new(error),
                }),
        )),
        InputFormat::Jsonl => match open(path) {
            Ok(reader) => Box::new(JsonlRecords {
                source,
                path: path.to_path_buf(),
                lines: BufReader::new(reader),
                line: 0,
                fields: fields.clone(),
            }),
            Err(e) => fail(e),
        },
        InputFormat::Csv => match open(path) {
            Ok(reader) => Box::new(csv_records(
                source,
                path.to_path_buf(),
                reader,
                fields.clone(),
                false,
            )),
            Err(e) => fail(e),
        },
        InputFormat::CheckThat => match open(path) {
            Ok(reader) => Box::new(csv_records(
                source,
                path.to_path_buf(),
                reader,
                fields.clone(),
                true,
            )),
            Err(e) => fail(e),
        },
    }
}

fn open(path: &Path) -> Result<Box<dyn Read>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    if path.is_dir() {
        return Err(MawqifError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"),
        ));
    }
    Ok(Box::new(
        std::fs::File::open(path).map_err(|e| MawqifError::io(path, e))?,
    ))
}

struct JsonlRecords {
    source: String,
    path: PathBuf,
    lines: BufReader<Box<dyn Read>>,
    line: usize,
    fields: RecordFields,
}

impl Iterator for JsonlRecords {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            let mut bytes = Vec::new();
            match self.lines.read_until(b'\n', &mut bytes) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    // An unreadable stream ends here; say so once.
                    let error = MawqifError::io(&self.path, e);
                    self.line = usize::MAX;
                    return Some(Err(InputFailure {
                        source: self.source.clone(),
                        record: None,
                        error: Box::new(error),
                    }));
                }
            }
            self.line += 1;
            if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            return Some(self.record(bytes));
        }
    }
}

impl JsonlRecords {
    fn bad(&self, reason: impl Into<String>) -> InputFailure {
        InputFailure {
            source: self.source.clone(),
            record: Some(format!("line {}", self.line)),
            error: Box::new(MawqifError::BadRecord {
                path: self.path.clone(),
                line: self.line,
                reason: reason.into(),
            }),
        }
    }

    fn record(&self, bytes: Vec<u8>) -> Item {
        let line = String::from_utf8(bytes).map_err(|e| {
            self.bad(format!(
                "not valid UTF-8 (first bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        let value: Value =
            serde_json::from_str(&line).map_err(|e| self.bad(format!("not JSON: {e}")))?;
        let Value::Object(mut object) = value else {
            return Err(self.bad("not a JSON object"));
        };
        record_from_fields(
            &self.source,
            &self.path,
            self.line,
            &mut object,
            &self.fields,
        )
        .map_err(|error| InputFailure {
            source: self.source.clone(),
            record: Some(format!("line {}", self.line)),
            error: Box::new(error),
        })
    }
}

/// A document from a record's fields; the id may be a string or a number.
fn record_from_fields(
    source: &str,
    path: &Path,
    line: usize,
    object: &mut Map<String, Value>,
    fields: &RecordFields,
) -> Result<Document> {
    let bad = |reason: String| MawqifError::BadRecord {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let id = match object.get(&fields.id) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(bad(format!(
                "field {:?} is not a string or number",
                fields.id
            )))
        }
        None => return Err(bad(format!("no {:?} field (set --id-field)", fields.id))),
    };
    let text = match object.remove(&fields.text) {
        Some(Value::String(s)) => s,
        Some(_) => return Err(bad(format!("field {:?} is not a string", fields.text))),
        None => {
            return Err(bad(format!(
                "no {:?} field (set --text-field)",
                fields.text
            )))
        }
    };
    if text.trim().is_empty() {
        return Err(bad(format!(
            "record {id}: field {:?} is empty",
            fields.text
        )));
    }
    if let Some(offset) = text.find('\0') {
        return Err(bad(format!(
            "record {id}: field {:?} has a NUL character at byte {offset} (binary data?)",
            fields.text
        )));
    }
    let kept = if fields.keep.is_empty() {
        None
    } else {
        Some(
            fields
                .keep
                .iter()
                .filter_map(|k| object.get(k).map(|v| (k.clone(), v.clone())))
                .collect(),
        )
    };
    Ok(Document {
        source: source.to_string(),
        id: Some(id),
        text,
        fields: kept,
    })
}

fn csv_records(
    source: String,
    path: PathBuf,
    reader: Box<dyn Read>,
    fields: RecordFields,
    tab_separated_unquoted: bool,
) -> impl Iterator<Item = Item> {
    let mut builder = csv::ReaderBuilder::new();
    builder.flexible(false);
    if tab_separated_unquoted {
        // As the lab's own reader (pandas, QUOTE_NONE): quotes are text.
        builder.delimiter(b'\t').quoting(false);
    }
    let mut csv = builder.from_reader(reader);
    let headers = csv.byte_headers().cloned();
    let mut rows = csv.into_byte_records();
    let mut failed_header = false;
    std::iter::from_fn(move || {
        let headers = match &headers {
            Ok(h) => h,
            Err(e) if !failed_header => {
                failed_header = true;
                return Some(Err(InputFailure {
                    source: source.clone(),
                    record: None,
                    error: Box::new(MawqifError::malformed(&path, format!("no CSV header: {e}"))),
                }));
            }
            Err(_) => return None,
        };
        let row = rows.next()?;
        let line = row
            .as_ref()
            .map(|r| r.position().map_or(0, |p| p.line() as usize))
            .unwrap_or(0);
        let item = match row {
            Err(e) => Err(MawqifError::BadRecord {
                path: path.clone(),
                line: e.position().map_or(0, |p| p.line() as usize),
                reason: e.to_string(),
            }),
            Ok(row) => {
                let mut object = Map::new();
                let mut bad_utf8 = None;
                for (name, value) in headers.iter().zip(row.iter()) {
                    let name = String::from_utf8_lossy(name).into_owned();
                    match std::str::from_utf8(value) {
                        Ok(v) => {
                            object.insert(name, Value::String(v.to_string()));
                        }
                        Err(e) => bad_utf8 = Some((name, e.valid_up_to())),
                    }
                }
                match bad_utf8 {
                    Some((name, at)) => Err(MawqifError::BadRecord {
                        path: path.clone(),
                        line,
                        reason: format!(
                            "field {name:?} is not valid UTF-8 (first bad byte at offset {at})"
                        ),
                    }),
                    None => record_from_fields(&source, &path, line, &mut object, &fields),
                }
            }
        };
        Some(item.map_err(|error| InputFailure {
            source: source.clone(),
            record: Some(format!("line {line}")),
            error: Box::new(error),
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn jsonl_records_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = r#"{"id": "a", "text": "خبر أول.", "outlet": "x"}
{"id": 7, "text": "خبر ثان."}

not json
{"id": "c"}
{"id": "d", "text": ""}
"#
        .as_bytes()
        .to_vec();
        bytes.extend_from_slice(b"{\"id\": \"e\", \"text\": \"\xff\"}\n");
        let p = write(dir.path(), "r.jsonl", &bytes);
        let fields = RecordFields {
            keep: vec!["outlet".into()],
            ..RecordFields::default()
        };
        let items: Vec<Item> = documents(&p, InputFormat::Jsonl, &fields).collect();
        assert_eq!(items.len(), 6);
        let a = items[0].as_ref().unwrap();
        assert_eq!((a.id.as_deref(), a.text.as_str()), (Some("a"), "خبر أول."));
        assert_eq!(a.fields.as_ref().unwrap()["outlet"], "x");
        assert_eq!(items[1].as_ref().unwrap().id.as_deref(), Some("7"));
        let errors: Vec<String> = items[2..]
            .iter()
            .map(|i| i.as_ref().unwrap_err().to_string())
            .collect();
        assert!(
            errors[0].contains("r.jsonl:4:") && errors[0].contains("not JSON"),
            "{errors:?}"
        );
        assert!(errors[1].contains("no \"text\" field"), "{errors:?}");
        assert!(
            errors[2].contains("record d") && errors[2].contains("empty"),
            "{errors:?}"
        );
        assert!(errors[3].contains("UTF-8"), "{errors:?}");
    }

    #[test]
    fn csv_records_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "r.csv",
            "id,text,outlet\n1,\"قال الوزير، في بيان، إن الخطة جاهزة.\",x\n2,نص\n3,,y\n".as_bytes(),
        );
        let items: Vec<Item> = documents(&p, InputFormat::Csv, &RecordFields::default()).collect();
        assert_eq!(items.len(), 3);
        assert!(items[0]
            .as_ref()
            .unwrap()
            .text
            .contains("قال الوزير، في بيان"));
        assert!(items[1].is_err(), "a short row is malformed");
        assert!(items[2].as_ref().unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn checkthat_rows_are_records_with_string_ids_and_quotes_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "lab.tsv",
            "sentence_id\tsentence\tlabel\nAlmayadeen_15_3\tقال \"الوزير\" إن الخطة جيدة. وأضاف أمرا.\tSUBJ\nx-2\t  \tOBJ\nx-3\tخبر قصير\n"
                .as_bytes(),
        );
        let fields = RecordFields {
            id: "sentence_id".into(),
            text: "sentence".into(),
            keep: vec!["label".into()],
        };
        let items: Vec<Item> = documents(&p, InputFormat::CheckThat, &fields).collect();
        assert_eq!(items.len(), 3);
        let first = items[0].as_ref().unwrap();
        assert_eq!(first.id.as_deref(), Some("Almayadeen_15_3"));
        assert_eq!(first.text, "قال \"الوزير\" إن الخطة جيدة. وأضاف أمرا.");
        assert_eq!(
            first.fields.as_ref().unwrap()["label"],
            Value::String("SUBJ".into())
        );
        // An empty sentence is that row's error (a submission needs every row).
        let empty = items[1].as_ref().unwrap_err().to_string();
        assert!(empty.contains("x-2") && empty.contains("empty"), "{empty}");
        // A row with fewer columns than the header is that row's error.
        assert!(items[2].is_err());
        assert!(InputFormat::CheckThat.is_sentence_per_record());
        assert!(!InputFormat::Csv.is_sentence_per_record());
    }

    #[test]
    fn text_files_are_one_document_each() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), "a.txt", "خبر.".as_bytes());
        let bin = write(dir.path(), "b.txt", b"ab\0cd");
        let doc = documents(&good, InputFormat::Text, &RecordFields::default())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            (doc.key(), doc.id.as_deref()),
            (good.to_str().unwrap(), None)
        );
        let err = documents(&bin, InputFormat::Text, &RecordFields::default())
            .next()
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("binary"), "{err}");
        let missing = documents(
            &dir.path().join("nope"),
            InputFormat::Jsonl,
            &RecordFields::default(),
        )
        .next()
        .unwrap()
        .unwrap_err();
        assert!(missing.to_string().contains("nope"));
    }
}
