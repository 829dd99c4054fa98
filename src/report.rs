//! Stage 6: write labelled units for people and programs.
//!
//! Contract: [`LabelledUnit`] is the public JSONL schema of `mawqif classify`
//! (one object per sentence: file, index, start, end, text, label, scores);
//! [`write_units`] renders a list of them as JSONL, TSV or a terminal table;
//! [`ArticleProfile`] sums up one text (schema `mawqif-profile/1`).

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::label::{Label, Scores};
use crate::text::Segment;

/// Probabilities keyed by label name, in the scheme's order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreMap {
    pub report: f32,
    pub quotation: f32,
    pub endorsement: f32,
    pub opinion: f32,
}

impl From<Scores> for ScoreMap {
    fn from(s: Scores) -> Self {
        ScoreMap {
            report: s.0[0],
            quotation: s.0[1],
            endorsement: s.0[2],
            opinion: s.0[3],
        }
    }
}

impl From<ScoreMap> for Scores {
    fn from(m: ScoreMap) -> Self {
        Scores([m.report, m.quotation, m.endorsement, m.opinion])
    }
}

/// One line of `classify` JSONL output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledUnit {
    pub file: String,
    /// The record id, for records (JSONL/CSV input); absent for text files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub index: usize,
    pub start: usize,
    pub end: usize,
    pub text: String,
    pub label: Label,
    pub scores: ScoreMap,
    /// Record fields passed through (`--keep-fields`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}

impl LabelledUnit {
    pub fn new(file: &str, segment: &Segment, scores: Scores) -> Self {
        LabelledUnit {
            file: file.to_string(),
            id: None,
            index: segment.index,
            start: segment.start,
            end: segment.end,
            text: segment.text.clone(),
            label: scores.best(),
            scores: scores.into(),
            fields: None,
        }
    }
}

/// One line of `segment` JSONL output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub file: String,
    pub index: usize,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jsonl,
    Tsv,
    Table,
    /// CLEF CheckThat! layout: `sentence_id<TAB>sentence<TAB>label`.
    CheckThat,
}

/// Render labelled units; the table shows a per-file label summary too.
pub fn write_units(
    out: &mut dyn Write,
    units: &[LabelledUnit],
    format: OutputFormat,
) -> std::io::Result<()> {
    // Ids are unit indices; with several files they carry the file name.
    let several = units.iter().any(|u| u.file != units[0].file);
    let mut writer = UnitWriter::new(format, several);
    writer.start(out)?;
    let mut i = 0;
    while i < units.len() {
        let file = &units[i].file;
        let end = units[i..]
            .iter()
            .position(|u| &u.file != file)
            .map_or(units.len(), |n| i + n);
        writer.begin_text(out)?;
        for u in &units[i..end] {
            writer.unit(out, u)?;
        }
        writer.end_text(out, file)?;
        i = end;
    }
    Ok(())
}

/// Writes units as they come, text by text, in one of the output formats
/// (the streaming form of [`write_units`]).
pub struct UnitWriter {
    format: OutputFormat,
    /// CheckThat ids carry the file name when there are several inputs.
    several: bool,
    /// Table: texts written so far, and the current text's label counts.
    texts: usize,
    counts: [usize; 4],
}

impl UnitWriter {
    pub fn new(format: OutputFormat, several: bool) -> Self {
        Self {
            format,
            several,
            texts: 0,
            counts: [0; 4],
        }
    }

    /// Before everything: the header of TSV and CheckThat output.
    pub fn start(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        match self.format {
            OutputFormat::Tsv => writeln!(out, "file\tindex\tstart\tend\tlabel\tscore\ttext"),
            OutputFormat::CheckThat => writeln!(out, "sentence_id\tsentence\tlabel"),
            OutputFormat::Jsonl | OutputFormat::Table => Ok(()),
        }
    }

    /// A text with at least one unit starts.
    pub fn begin_text(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.format == OutputFormat::Table {
            if self.texts > 0 {
                writeln!(out)?;
            }
            self.counts = [0; 4];
            writeln!(out, "{:>4}  {:<11} {:>5}  text", "#", "label", "p")?;
        }
        self.texts += 1;
        Ok(())
    }

    pub fn unit(&mut self, out: &mut dyn Write, u: &LabelledUnit) -> std::io::Result<()> {
        match self.format {
            OutputFormat::Jsonl => {
                serde_json::to_writer(&mut *out, u)?;
                writeln!(out)
            }
            OutputFormat::Tsv => {
                let score = Scores::from(u.scores).get(u.label);
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{:.3}\t{}",
                    u.file,
                    u.index,
                    u.start,
                    u.end,
                    u.label,
                    score,
                    u.text.replace(['\t', '\n'], " ")
                )
            }
            OutputFormat::Table => {
                self.counts[u.label.index()] += 1;
                let score = Scores::from(u.scores).get(u.label);
                writeln!(
                    out,
                    "{:>4}  {:<11} {:>5.2}  {}",
                    u.index,
                    u.label.as_str(),
                    score,
                    u.text
                )
            }
            OutputFormat::CheckThat => {
                let id = match (&u.id, self.several) {
                    (Some(record), _) => format!("{record}:{}", u.index),
                    (None, true) => format!("{}:{}", u.file, u.index),
                    (None, false) => u.index.to_string(),
                };
                writeln!(
                    out,
                    "{id}\t{}\t{}",
                    u.text.replace(['\t', '\n'], " "),
                    u.label
                )
            }
        }
    }

    /// The text `name` ended: the table's label summary line.
    pub fn end_text(&mut self, out: &mut dyn Write, name: &str) -> std::io::Result<()> {
        if self.format != OutputFormat::Table {
            return Ok(());
        }
        let counts = self.counts;
        let n: usize = counts.iter().sum();
        write!(out, "── {name}: {n} sentences:")?;
        for l in Label::ALL {
            let c = counts[l.index()];
            write!(
                out,
                "  {l} {c} ({:.0}%)",
                100.0 * c as f64 / n.max(1) as f64
            )?;
        }
        writeln!(out)
    }
}

/// The sentence with the highest probability of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrongestUnit {
    pub index: usize,
    pub score: f32,
    pub text: String,
}

/// One text's stance profile: how much of it is each label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArticleProfile {
    pub schema: String,
    /// The file name or record id the text came from.
    pub file: String,
    pub sentences: usize,
    /// Sentences whose best label is each label.
    pub counts: ScoreCounts,
    /// `counts` as shares of `sentences` (0 for an empty text).
    pub shares: ScoreMap,
    /// Mean probability of each label over the sentences.
    pub mean_scores: ScoreMap,
    /// The sentence most likely to be praise, and the one most likely to be opinion.
    pub strongest_endorsement: Option<StrongestUnit>,
    pub strongest_opinion: Option<StrongestUnit>,
}

/// Counts keyed by label name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ScoreCounts {
    pub report: usize,
    pub quotation: usize,
    pub endorsement: usize,
    pub opinion: usize,
}

pub const PROFILE_SCHEMA: &str = "mawqif-profile/1";

impl ArticleProfile {
    /// The profile of `units`, all from the text called `file`.
    pub fn new(file: &str, units: &[LabelledUnit]) -> Self {
        let n = units.len();
        let mut counts = [0usize; 4];
        let mut sums = [0f64; 4];
        for u in units {
            counts[u.label.index()] += 1;
            for (k, p) in Scores::from(u.scores).0.iter().enumerate() {
                sums[k] += *p as f64;
            }
        }
        let per = |v: [f64; 4]| -> ScoreMap {
            let d = n.max(1) as f64;
            Scores([
                (v[0] / d) as f32,
                (v[1] / d) as f32,
                (v[2] / d) as f32,
                (v[3] / d) as f32,
            ])
            .into()
        };
        let strongest = |label: Label| {
            units
                .iter()
                .map(|u| (u, Scores::from(u.scores).get(label)))
                .fold(None::<(&LabelledUnit, f32)>, |best, (u, p)| match best {
                    Some((_, q)) if q >= p => best,
                    _ => Some((u, p)),
                })
                .map(|(u, p)| StrongestUnit {
                    index: u.index,
                    score: p,
                    text: u.text.clone(),
                })
        };
        ArticleProfile {
            schema: PROFILE_SCHEMA.to_string(),
            file: file.to_string(),
            sentences: n,
            counts: ScoreCounts {
                report: counts[0],
                quotation: counts[1],
                endorsement: counts[2],
                opinion: counts[3],
            },
            shares: per(counts.map(|c| c as f64)),
            mean_scores: per(sums),
            strongest_endorsement: strongest(Label::Endorsement),
            strongest_opinion: strongest(Label::Opinion),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_counts_shares_means_and_strongest() {
        let seg = |i: usize, t: &str| Segment {
            index: i,
            start: i * 10,
            end: i * 10 + 5,
            text: t.into(),
        };
        let units = vec![
            LabelledUnit::new("a", &seg(0, "أ"), Scores([0.7, 0.1, 0.1, 0.1])),
            LabelledUnit::new("a", &seg(1, "ب"), Scores([0.1, 0.1, 0.6, 0.2])),
            LabelledUnit::new("a", &seg(2, "ج"), Scores([0.1, 0.1, 0.3, 0.5])),
            LabelledUnit::new("a", &seg(3, "د"), Scores([0.6, 0.2, 0.1, 0.1])),
        ];
        let p = ArticleProfile::new("a", &units);
        assert_eq!(p.sentences, 4);
        assert_eq!(
            (p.counts.report, p.counts.endorsement, p.counts.opinion),
            (2, 1, 1)
        );
        assert_eq!(p.shares.report, 0.5);
        assert!((p.mean_scores.endorsement - 0.275).abs() < 1e-6);
        assert_eq!(p.strongest_endorsement.as_ref().map(|s| s.index), Some(1));
        assert_eq!(p.strongest_opinion.as_ref().map(|s| s.index), Some(2));
        let empty = ArticleProfile::new("e", &[]);
        assert_eq!((empty.sentences, empty.shares.report), (0, 0.0));
        assert!(empty.strongest_opinion.is_none());
    }

    #[test]
    fn jsonl_schema_is_stable() {
        let seg = Segment {
            index: 0,
            start: 3,
            end: 10,
            text: "خبر".into(),
        };
        let u = LabelledUnit::new("a.txt", &seg, Scores([0.1, 0.6, 0.2, 0.1]));
        let mut buf = Vec::new();
        write_units(&mut buf, &[u], OutputFormat::Jsonl).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys.len(), 7);
        assert_eq!(v["label"], "quotation");
        assert_eq!(v["scores"].as_object().unwrap().len(), 4);
        assert_eq!(v["start"], 3);
    }
}
