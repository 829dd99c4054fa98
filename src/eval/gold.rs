//! Gold sets and prediction files, and pairing one with the other.
//!
//! Gold sets are JSONL (`{"id","start","end","text","label","alt"}`, spans
//! into the source text) or CLEF CheckThat! TSV (`sentence_id<TAB>sentence<TAB>label`).
//! Predictions are `mawqif classify` JSONL (matched by span) or CheckThat! TSV
//! (matched by id): three columns, or the lab's two-column submission
//! `sentence_id<TAB>label`. Ids are any strings; labels any names (the
//! scheme is the data's own). Unmatched sentences are counted, never dropped
//! silently.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{MawqifError, Result};
use crate::label::{Label, LabelMap, Scores};
use crate::report::LabelledUnit;

/// One gold sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldItem {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<usize>,
    pub text: String,
    pub label: Label,
    #[serde(default)]
    pub alt: Option<Label>,
}

impl GoldItem {
    pub fn span(&self) -> Option<(usize, usize)> {
        Some((self.start?, self.end?))
    }
}

/// One predicted sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub id: Option<String>,
    pub span: Option<(usize, usize)>,
    pub text: String,
    pub label: Label,
    pub scores: Option<Scores>,
}

impl From<&LabelledUnit> for Prediction {
    fn from(u: &LabelledUnit) -> Self {
        Prediction {
            id: Some(u.index.to_string()),
            span: Some((u.start, u.end)),
            text: u.text.clone(),
            label: u.label.clone(),
            scores: Some(u.scores.clone()),
        }
    }
}

impl Prediction {
    /// This prediction in another scheme.
    pub fn mapped(&self, map: &LabelMap) -> Result<Prediction> {
        Ok(Prediction {
            label: map.label(&self.label),
            scores: match &self.scores {
                Some(s) => Some(map.scores(s)?),
                None => None,
            },
            ..self.clone()
        })
    }
}

/// The columns of a CheckThat! TSV file: named by its header row
/// (`sentence_id`, `sentence`, `label`, in any order, others ignored), or
/// without a header `id, sentence, label` (three columns) / `id, label` (two).
struct TsvColumns {
    id: usize,
    sentence: Option<usize>,
    label: Option<usize>,
    width: usize,
}

impl TsvColumns {
    fn from_header(cols: &[&str]) -> Option<TsvColumns> {
        let find = |name: &str| cols.iter().position(|c| c.trim() == name);
        Some(TsvColumns {
            id: find("sentence_id")?,
            sentence: find("sentence"),
            label: find("label"),
            width: cols.len(),
        })
    }

    fn positional(width: usize) -> TsvColumns {
        TsvColumns {
            id: 0,
            sentence: (width >= 3).then_some(1),
            label: match width {
                0 | 1 => None,
                2 => Some(1),
                _ => Some(2),
            },
            width,
        }
    }
}

/// One row of a CheckThat! TSV file: line number, id, sentence, label.
type TsvRow = (usize, String, Option<String>, Option<String>);

/// The rows of a CheckThat! TSV file.
fn checkthat_rows(path: &Path, text: &str) -> Result<Vec<TsvRow>> {
    let mut columns: Option<TsvColumns> = None;
    let mut rows = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let lineno = k + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let layout = match &columns {
            Some(c) => c,
            None => {
                let header = TsvColumns::from_header(&cols);
                let is_header = header.is_some();
                columns = Some(header.unwrap_or_else(|| TsvColumns::positional(cols.len())));
                if is_header {
                    continue;
                }
                columns
                    .as_ref()
                    .ok_or_else(|| bad(path, lineno, "no columns"))?
            }
        };
        if cols.len() != layout.width {
            return Err(bad(
                path,
                lineno,
                format!(
                    "{} columns where the file has {} (sentence_id<TAB>sentence<TAB>label, or sentence_id<TAB>label)",
                    cols.len(),
                    layout.width
                ),
            ));
        }
        let id = cols[layout.id].trim().to_string();
        if id.is_empty() {
            return Err(bad(path, lineno, "empty sentence_id"));
        }
        rows.push((
            lineno,
            id,
            layout.sentence.map(|c| cols[c].to_string()),
            layout.label.map(|c| cols[c].to_string()),
        ));
    }
    Ok(rows)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoldFormat {
    Jsonl,
    CheckThat,
}

fn read_nonempty(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| MawqifError::io(path, e))?;
    if text.trim().is_empty() {
        return Err(MawqifError::EmptyInput {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

fn bad(path: &Path, line: usize, reason: impl Into<String>) -> MawqifError {
    MawqifError::BadRecord {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

fn parse_label(path: &Path, line: usize, s: &str) -> Result<Label> {
    s.trim()
        .parse::<Label>()
        .map_err(|e| bad(path, line, e.to_string()))
}

/// Read a gold set; ids must be unique and `alt` must differ from `label`.
pub fn read_gold(path: &Path, format: GoldFormat) -> Result<Vec<GoldItem>> {
    parse_gold_str(&read_nonempty(path)?, path, format)
}

/// CheckThat! gold rows; `unique_ids` refuses a repeated `sentence_id`
/// (scoring joins on it; training data may repeat one, as the lab's Arabic
/// training split does).
pub fn read_checkthat_gold(path: &Path, unique_ids: bool) -> Result<Vec<GoldItem>> {
    parse_checkthat_gold(&read_nonempty(path)?, path, unique_ids)
}

fn parse_checkthat_gold(text: &str, path: &Path, unique_ids: bool) -> Result<Vec<GoldItem>> {
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    for (lineno, id, sentence, label) in checkthat_rows(path, text)? {
        let label = label.ok_or_else(|| {
            bad(
                path,
                lineno,
                "gold needs a label column: sentence_id<TAB>sentence<TAB>label",
            )
        })?;
        if !seen.insert(id.clone()) && unique_ids {
            return Err(bad(path, lineno, format!("duplicate id {id:?}")));
        }
        items.push(GoldItem {
            id,
            start: None,
            end: None,
            text: sentence.unwrap_or_default(),
            label: parse_label(path, lineno, &label)?,
            alt: None,
        });
    }
    Ok(items)
}

/// Parse the text of a gold set read from `path` (named in errors).
pub fn parse_gold_str(text: &str, path: &Path, format: GoldFormat) -> Result<Vec<GoldItem>> {
    if format == GoldFormat::CheckThat {
        return parse_checkthat_gold(text, path, true);
    }
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    for (k, line) in text.lines().enumerate() {
        let lineno = k + 1;
        if line.trim().is_empty() {
            continue;
        }
        let item = match format {
            GoldFormat::Jsonl => {
                let v: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| bad(path, lineno, format!("not JSON: {e}")))?;
                let label = v
                    .get("label")
                    .and_then(|l| l.as_str())
                    .ok_or_else(|| bad(path, lineno, "no \"label\" string"))?;
                let label = parse_label(path, lineno, label)?;
                let alt = match v.get("alt") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(a) => Some(parse_label(
                        path,
                        lineno,
                        a.as_str()
                            .ok_or_else(|| bad(path, lineno, "\"alt\" is not a string"))?,
                    )?),
                };
                let id = match v.get("id") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => return Err(bad(path, lineno, "no \"id\"")),
                };
                let text = v
                    .get("text")
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| bad(path, lineno, "no \"text\" string"))?
                    .to_string();
                let offset = |key: &str| v.get(key).and_then(|x| x.as_u64()).map(|x| x as usize);
                GoldItem {
                    id,
                    start: offset("start"),
                    end: offset("end"),
                    text,
                    label,
                    alt,
                }
            }
            // Read above, with its header.
            GoldFormat::CheckThat => continue,
        };
        if let Some((start, end)) = item.span() {
            if start > end {
                return Err(bad(
                    path,
                    lineno,
                    format!("span starts at {start}, after its end {end}"),
                ));
            }
        }
        if item.alt.as_ref() == Some(&item.label) {
            return Err(bad(path, lineno, "alt repeats the label; use null"));
        }
        if !seen.insert(item.id.clone()) {
            return Err(bad(path, lineno, format!("duplicate id {:?}", item.id)));
        }
        items.push(item);
    }
    Ok(items)
}

/// Read predictions: `classify` JSONL, or CheckThat! TSV.
pub fn read_predictions(path: &Path, format: GoldFormat) -> Result<Vec<Prediction>> {
    parse_predictions_str(&read_nonempty(path)?, path, format)
}

/// Parse the text of a predictions file read from `path` (named in errors).
pub fn parse_predictions_str(
    text: &str,
    path: &Path,
    format: GoldFormat,
) -> Result<Vec<Prediction>> {
    let mut preds = Vec::new();
    if format == GoldFormat::CheckThat {
        for (lineno, id, sentence, label) in checkthat_rows(path, text)? {
            let label = label.ok_or_else(|| {
                bad(
                    path,
                    lineno,
                    "predictions need a label column: sentence_id<TAB>label",
                )
            })?;
            preds.push(Prediction {
                id: Some(id),
                span: None,
                text: sentence.unwrap_or_default(),
                label: parse_label(path, lineno, &label)?,
                scores: None,
            });
        }
        return Ok(preds);
    }
    for (k, line) in text.lines().enumerate() {
        let lineno = k + 1;
        if line.trim().is_empty() {
            continue;
        }
        match format {
            GoldFormat::Jsonl => {
                let u: LabelledUnit = serde_json::from_str(line).map_err(|e| {
                    bad(
                        path,
                        lineno,
                        format!("not a `mawqif classify` JSONL record: {e}"),
                    )
                })?;
                preds.push(Prediction::from(&u));
            }
            GoldFormat::CheckThat => continue,
        }
    }
    Ok(preds)
}

/// Gold items paired with their predictions.
#[derive(Debug, Clone)]
pub struct Matched {
    pub pairs: Vec<(GoldItem, Prediction)>,
    /// Gold sentences with no prediction.
    pub missing: Vec<GoldItem>,
    /// Predictions with no gold sentence.
    pub extra: usize,
}

/// Pair by span when gold has spans, else by id. A prediction at a gold span
/// with different text means the file is for another text: an error.
pub fn match_predictions(
    gold: &[GoldItem],
    preds: &[Prediction],
    pred_path: &Path,
) -> Result<Matched> {
    let by_span = gold.iter().all(|g| g.span().is_some()) && preds.iter().all(|p| p.span.is_some());
    let mut index: HashMap<String, usize> = HashMap::new();
    for (k, p) in preds.iter().enumerate() {
        let key = if by_span {
            p.span.map(|(s, e)| format!("{s}:{e}")).unwrap_or_default()
        } else {
            p.id.clone().unwrap_or_default()
        };
        index.insert(key, k);
    }
    let mut pairs = Vec::new();
    let mut missing = Vec::new();
    let mut used = HashSet::new();
    for g in gold {
        let key = if by_span {
            g.span()
                .map(|(s, e)| format!("{s}:{e}"))
                .unwrap_or_default()
        } else {
            g.id.clone()
        };
        match index.get(&key) {
            Some(&k) => {
                let p = &preds[k];
                // Two-column predictions carry no text to check.
                if !p.text.is_empty() && !g.text.is_empty() && p.text.trim() != g.text.trim() {
                    return Err(bad(
                        pred_path,
                        k + 1,
                        format!(
                            "prediction at gold sentence {} has different text: is this file for another text?",
                            g.id
                        ),
                    ));
                }
                used.insert(k);
                pairs.push((g.clone(), p.clone()));
            }
            None => missing.push(g.clone()),
        }
    }
    if pairs.is_empty() {
        return Err(MawqifError::NoMatchingPredictions {
            path: pred_path.to_path_buf(),
            by: if by_span { "span" } else { "id" },
        });
    }
    Ok(Matched {
        pairs,
        missing,
        extra: preds.len() - used.len(),
    })
}

/// The text a gold sentence belongs to: its id without a final `-NN`
/// (`article-07` → `article`); an id without one stands alone.
pub fn document_of(id: &str) -> &str {
    match id.rsplit_once('-') {
        Some((doc, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => doc,
        _ => id,
    }
}

/// The previous unit of each gold sentence within its own text.
pub fn previous_in_document(gold: &[GoldItem]) -> Vec<Option<&str>> {
    (0..gold.len())
        .map(|i| {
            let j = i.checked_sub(1)?;
            (document_of(&gold[j].id) == document_of(&gold[i].id)).then(|| gold[j].text.as_str())
        })
        .collect()
}

/// Predictions for the gold sentences themselves, from a classifier's
/// scores in gold order: what a system run on the gold texts produced.
pub fn predictions_for_gold(gold: &[GoldItem], scores: Vec<Scores>) -> Vec<Prediction> {
    gold.iter()
        .zip(scores)
        .map(|(g, s)| Prediction {
            id: Some(g.id.clone()),
            span: g.span(),
            text: g.text.clone(),
            label: s.best(),
            scores: Some(s),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_come_from_ids() {
        assert_eq!(document_of("article-07"), "article");
        assert_eq!(document_of("r12-00"), "r12");
        assert_eq!(document_of("Almayadeen_15_3"), "Almayadeen_15_3");
        assert_eq!(document_of("a-b"), "a-b");
        let item = |id: &str, text: &str| GoldItem {
            id: id.into(),
            start: None,
            end: None,
            text: text.into(),
            label: crate::label::Stance::Report.label(),
            alt: None,
        };
        let gold = [item("x-00", "a"), item("x-01", "b"), item("y-00", "c")];
        assert_eq!(previous_in_document(&gold), vec![None, Some("a"), None]);
    }

    #[test]
    fn checkthat_gold_and_two_column_predictions_join_on_string_ids() {
        let dir = tempfile::tempdir().unwrap();
        let gold_path = dir.path().join("gold.tsv");
        std::fs::write(
            &gold_path,
            "sentence_id\tsentence\tlabel\nAlmayadeen_15_3\tجملة أولى\tSUBJ\nMIS_2615-eurl_03_023\tجملة ثانية\tOBJ\n",
        )
        .unwrap();
        let pred_path = dir.path().join("pred.tsv");
        std::fs::write(
            &pred_path,
            "sentence_id\tlabel\nMIS_2615-eurl_03_023\tSUBJ\nAlmayadeen_15_3\tSUBJ\n",
        )
        .unwrap();
        let gold = read_gold(&gold_path, GoldFormat::CheckThat).unwrap();
        assert_eq!(gold[0].label.as_str(), "SUBJ");
        let preds = read_predictions(&pred_path, GoldFormat::CheckThat).unwrap();
        let m = match_predictions(&gold, &preds, &pred_path).unwrap();
        assert_eq!((m.pairs.len(), m.missing.len(), m.extra), (2, 0, 0));
        assert!(m.pairs.iter().all(|(g, p)| g.id == p.id.clone().unwrap()));
        // A repeated id: refused for scoring, kept for training.
        std::fs::write(
            &gold_path,
            "sentence_id\tsentence\tlabel\na_1\tجملة\tSUBJ\na_1\tأخرى\tOBJ\n",
        )
        .unwrap();
        assert!(read_gold(&gold_path, GoldFormat::CheckThat).is_err());
        assert_eq!(read_checkthat_gold(&gold_path, false).unwrap().len(), 2);
        // Gold without labels cannot be scored; a short row is an error.
        std::fs::write(&gold_path, "sentence_id\tsentence\na\tنص\n").unwrap();
        assert!(read_gold(&gold_path, GoldFormat::CheckThat).is_err());
        std::fs::write(&pred_path, "sentence_id\tlabel\na\n").unwrap();
        assert!(read_predictions(&pred_path, GoldFormat::CheckThat).is_err());
    }

    #[test]
    fn a_map_renames_prediction_labels() {
        let p = Prediction {
            id: Some("1".into()),
            span: None,
            text: String::new(),
            label: crate::label::Stance::Opinion.label(),
            scores: Some(Scores::stance([0.1, 0.1, 0.2, 0.6])),
        };
        let map =
            LabelMap::parse("report=OBJ,quotation=OBJ,endorsement=SUBJ,opinion=SUBJ").unwrap();
        let m = p.mapped(&map).unwrap();
        assert_eq!(m.label.as_str(), "SUBJ");
        assert!((m.scores.unwrap().get(&m.label) - 0.8).abs() < 1e-6);
    }

    #[test]
    fn a_span_that_ends_before_it_starts_is_refused() {
        // Found by the gold fuzz target: such a span later sliced text backwards.
        let path = Path::new("g.jsonl");
        let line = |start: usize, end: usize| {
            format!(
                r#"{{"id":"a-00","start":{start},"end":{end},"text":"x","label":"report","alt":null}}"#
            )
        };
        assert!(parse_gold_str(&line(2, 3), path, GoldFormat::Jsonl).is_ok());
        let err = parse_gold_str(&line(5, 3), path, GoldFormat::Jsonl)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("g.jsonl") && err.contains("after its end"),
            "{err}"
        );
    }
}
