//! Stage 6: write labelled units for people and programs.
//!
//! Contract: [`LabelledUnit`] is the public JSONL schema of `mawqif classify`
//! (one object per sentence: file, index, start, end, text, label, scores);
//! [`write_units`] renders a list of them as JSONL, TSV or a terminal table;
//! [`ArticleProfile`] sums up one text (schema `mawqif-profile/1`).

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::label::{Label, LabelSet, Scores, Stance};
use crate::text::Segment;

/// Probabilities keyed by label name, in the scheme's order (an object in JSON).
pub type ScoreMap = Scores;

/// Below this probability the table marks a label `?` and counts it as one
/// to check by hand: on 1,045 units of real news the shipped head's labels
/// under 0.90 were right about 62% of the time, those above it 93%.
pub const UNSURE_BELOW: f32 = 0.90;

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
            scores,
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
    /// A CheckThat! submission: `sentence_id<TAB>label`, one row per unit.
    Submission,
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
    /// Table: texts written so far, and the current text's label counts
    /// and labels under [`UNSURE_BELOW`].
    texts: usize,
    counts: Vec<(Label, usize)>,
    unsure: usize,
    /// Record ids are sentence ids as they are (one unit per record, as in
    /// CheckThat! input), not `record:index`.
    record_is_sentence: bool,
}

impl UnitWriter {
    pub fn new(format: OutputFormat, several: bool) -> Self {
        Self {
            format,
            several,
            texts: 0,
            counts: Vec::new(),
            unsure: 0,
            record_is_sentence: false,
        }
    }

    /// Each record is one sentence: its id is the sentence id.
    pub fn record_is_sentence(mut self, yes: bool) -> Self {
        self.record_is_sentence = yes;
        self
    }

    fn sentence_id(&self, u: &LabelledUnit) -> String {
        match (&u.id, self.several) {
            (Some(record), _) if self.record_is_sentence => record.clone(),
            (Some(record), _) => format!("{record}:{}", u.index),
            (None, true) => format!("{}:{}", u.file, u.index),
            (None, false) => u.index.to_string(),
        }
    }

    /// Before everything: the header of TSV and CheckThat output.
    pub fn start(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        match self.format {
            OutputFormat::Tsv => writeln!(out, "file\tindex\tstart\tend\tlabel\tscore\ttext"),
            OutputFormat::CheckThat => writeln!(out, "sentence_id\tsentence\tlabel"),
            OutputFormat::Submission => writeln!(out, "sentence_id\tlabel"),
            OutputFormat::Jsonl | OutputFormat::Table => Ok(()),
        }
    }

    /// A text with at least one unit starts.
    pub fn begin_text(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.format == OutputFormat::Table {
            if self.texts > 0 {
                writeln!(out)?;
            }
            self.counts.clear();
            self.unsure = 0;
            writeln!(out, "{:>4}  {:<11} {:>5}   text", "#", "label", "p")?;
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
                let score = u.scores.get(&u.label);
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
                if self.counts.is_empty() {
                    self.counts = u
                        .scores
                        .labels()
                        .labels()
                        .iter()
                        .map(|l| (l.clone(), 0))
                        .collect();
                }
                match self.counts.iter_mut().find(|(l, _)| *l == u.label) {
                    Some((_, c)) => *c += 1,
                    None => self.counts.push((u.label.clone(), 1)),
                }
                let score = u.scores.get(&u.label);
                let unsure = score < UNSURE_BELOW;
                self.unsure += usize::from(unsure);
                writeln!(
                    out,
                    "{:>4}  {:<11} {:>5.2}{}  {}",
                    u.index,
                    u.label.as_str(),
                    score,
                    if unsure { '?' } else { ' ' },
                    u.text
                )
            }
            OutputFormat::Submission => {
                writeln!(out, "{}\t{}", self.sentence_id(u), u.label)
            }
            OutputFormat::CheckThat => {
                let id = self.sentence_id(u);
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
        let n: usize = self.counts.iter().map(|(_, c)| c).sum();
        write!(out, "── {name}: {n} sentences:")?;
        for (l, c) in &self.counts {
            write!(
                out,
                "  {l} {c} ({:.0}%)",
                100.0 * *c as f64 / n.max(1) as f64
            )?;
        }
        if self.unsure > 0 {
            write!(
                out,
                "  · {} marked ? (p < {UNSURE_BELOW:.2}): check by hand",
                self.unsure
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
    /// The sentence most likely to be praise, and the one most likely to be
    /// opinion (stance scheme only; null in other schemes).
    pub strongest_endorsement: Option<StrongestUnit>,
    pub strongest_opinion: Option<StrongestUnit>,
}

/// Counts keyed by label name, in the scheme's order (an object in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScoreCounts(pub Vec<(Label, usize)>);

impl ScoreCounts {
    pub fn get(&self, label: &Label) -> usize {
        self.0
            .iter()
            .find(|(l, _)| l == label)
            .map_or(0, |(_, c)| *c)
    }
}

impl Serialize for ScoreCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (l, c) in &self.0 {
            map.serialize_entry(l.as_str(), c)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ScoreCounts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through an ordered list of entries: JSON maps here keep file order.
        struct CountsVisitor;
        impl<'de> serde::de::Visitor<'de> for CountsVisitor {
            type Value = ScoreCounts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of label counts")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<ScoreCounts, A::Error> {
                let mut out = Vec::new();
                while let Some((l, c)) = access.next_entry::<Label, usize>()? {
                    out.push((l, c));
                }
                Ok(ScoreCounts(out))
            }
        }
        d.deserialize_map(CountsVisitor)
    }
}

pub const PROFILE_SCHEMA: &str = "mawqif-profile/1";

impl ArticleProfile {
    /// The profile of `units`, all from the text called `file`.
    /// The profile of `units`, all from the text called `file`, over `labels`
    /// (the classifier's scheme: an empty text still lists every label).
    pub fn new(file: &str, labels: &LabelSet, units: &[LabelledUnit]) -> Self {
        let n = units.len();
        let k = labels.len();
        let mut counts = vec![0usize; k];
        let mut sums = vec![0f64; k];
        for u in units {
            if let Some(i) = labels.index(&u.label) {
                counts[i] += 1;
            }
            for (i, l) in labels.labels().iter().enumerate() {
                sums[i] += u.scores.get(l) as f64;
            }
        }
        let per = |v: Vec<f64>| -> ScoreMap {
            let d = n.max(1) as f64;
            // One value per label by construction.
            Scores::from_values(labels, v.iter().map(|x| (x / d) as f32))
        };
        let strongest = |label: Stance| {
            if !labels.is_stance() {
                return None;
            }
            let label = label.label();
            units
                .iter()
                .map(|u| (u, u.scores.get(&label)))
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
            counts: ScoreCounts(
                labels
                    .labels()
                    .iter()
                    .cloned()
                    .zip(counts.iter().copied())
                    .collect(),
            ),
            shares: per(counts.iter().map(|&c| c as f64).collect()),
            mean_scores: per(sums),
            strongest_endorsement: strongest(Stance::Endorsement),
            strongest_opinion: strongest(Stance::Opinion),
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
            LabelledUnit::new("a", &seg(0, "أ"), Scores::stance([0.7, 0.1, 0.1, 0.1])),
            LabelledUnit::new("a", &seg(1, "ب"), Scores::stance([0.1, 0.1, 0.6, 0.2])),
            LabelledUnit::new("a", &seg(2, "ج"), Scores::stance([0.1, 0.1, 0.3, 0.5])),
            LabelledUnit::new("a", &seg(3, "د"), Scores::stance([0.6, 0.2, 0.1, 0.1])),
        ];
        let stance = LabelSet::stance();
        let l = |s: Stance| s.label();
        let p = ArticleProfile::new("a", &stance, &units);
        assert_eq!(p.sentences, 4);
        assert_eq!(
            (
                p.counts.get(&l(Stance::Report)),
                p.counts.get(&l(Stance::Endorsement)),
                p.counts.get(&l(Stance::Opinion))
            ),
            (2, 1, 1)
        );
        assert_eq!(p.shares.get(&l(Stance::Report)), 0.5);
        assert!((p.mean_scores.get(&l(Stance::Endorsement)) - 0.275).abs() < 1e-6);
        assert_eq!(p.strongest_endorsement.as_ref().map(|s| s.index), Some(1));
        assert_eq!(p.strongest_opinion.as_ref().map(|s| s.index), Some(2));
        let empty = ArticleProfile::new("e", &stance, &[]);
        assert_eq!(
            (empty.sentences, empty.shares.get(&l(Stance::Report))),
            (0, 0.0)
        );
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""counts":{"report":2,"quotation":0,"endorsement":1,"opinion":1}"#));
        let back: ArticleProfile = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
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
        let u = LabelledUnit::new("a.txt", &seg, Scores::stance([0.1, 0.6, 0.2, 0.1]));
        let mut buf = Vec::new();
        write_units(&mut buf, &[u], OutputFormat::Jsonl).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys.len(), 7);
        assert_eq!(v["label"], "quotation");
        assert_eq!(v["scores"].as_object().unwrap().len(), 4);
        assert_eq!(v["start"], 3);
    }

    #[test]
    fn table_marks_unsure_labels_and_counts_them_per_text() {
        let seg = |i: usize| Segment {
            index: i,
            start: i,
            end: i + 1,
            text: "خبر".into(),
        };
        let units = vec![
            LabelledUnit::new("a.txt", &seg(0), Scores::stance([0.95, 0.03, 0.01, 0.01])),
            LabelledUnit::new("a.txt", &seg(1), Scores::stance([0.10, 0.55, 0.30, 0.05])),
            LabelledUnit::new("b.txt", &seg(0), Scores::stance([0.01, 0.97, 0.01, 0.01])),
        ];
        let mut buf = Vec::new();
        write_units(&mut buf, &units, OutputFormat::Table).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("0.95  "), "{text}");
        assert!(lines[2].contains("0.55? "), "{text}");
        assert!(
            lines[3].ends_with("· 1 marked ? (p < 0.90): check by hand"),
            "{text}"
        );
        // The count starts again with each text; a text with none says nothing.
        assert!(lines[7].starts_with("── b.txt: 1 sentences:"), "{text}");
        assert!(!lines[7].contains("marked"), "{text}");
    }

    #[test]
    fn submission_rows_use_record_ids_and_the_units_own_labels() {
        let labels = LabelSet::parse("OBJ,SUBJ").unwrap();
        let seg = Segment {
            index: 0,
            start: 0,
            end: 3,
            text: "خبر".into(),
        };
        let mut u = LabelledUnit::new(
            "lab.tsv",
            &seg,
            Scores::new(labels.clone(), vec![0.2, 0.8]).unwrap(),
        );
        u.id = Some("Almayadeen_15_3".into());
        let mut buf = Vec::new();
        let mut w = UnitWriter::new(OutputFormat::Submission, true).record_is_sentence(true);
        w.start(&mut buf).unwrap();
        w.unit(&mut buf, &u).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "sentence_id\tlabel\nAlmayadeen_15_3\tSUBJ\n"
        );
        let mut buf = Vec::new();
        let mut w = UnitWriter::new(OutputFormat::Submission, true);
        w.unit(&mut buf, &u).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "Almayadeen_15_3:0\tSUBJ\n");
    }
}
