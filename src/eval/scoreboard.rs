//! The `mawqif eval` report: several systems scored on one gold set, shown
//! side by side as a terminal table, Markdown, or JSON (stable schema, see
//! eval/README.md).

use std::fmt::Write as _;

use serde::Serialize;

use std::path::{Path, PathBuf};

use crate::error::{MawqifError, Result};
use crate::head::cues::cue_scores;
use crate::label::{Label, LabelMap, LabelSet, Stance};
use crate::text::Segmenter;

use super::gold::{match_predictions, predictions_for_gold, GoldItem, Matched, Prediction};
use super::metrics::{
    metrics, segmentation_score, Metrics, SegmentationScore, WithInterval, BOOTSTRAP_SAMPLES,
};

/// One misclassified sentence.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRow {
    pub id: String,
    pub gold: Label,
    pub alt: Option<Label>,
    pub predicted: Label,
    /// Probability of the predicted label, when the system gives scores.
    pub score: Option<f32>,
    pub text: String,
}

/// One system's scores.
#[derive(Debug, Clone, Serialize)]
pub struct SystemReport {
    pub name: String,
    pub matched: usize,
    /// Gold sentences without a prediction (counted as unscored, not wrong).
    pub missing: usize,
    /// Predictions that match no gold sentence.
    pub extra: usize,
    pub metrics: Metrics,
    pub errors: Vec<ErrorRow>,
}

impl SystemReport {
    /// `labels`: the report's label order.
    pub fn from_matched(name: &str, matched: &Matched, labels: &[Label], seed: u64) -> Self {
        let items: Vec<_> = matched
            .pairs
            .iter()
            .map(|(g, p)| (g.label.clone(), g.alt.clone(), p.label.clone()))
            .collect();
        let errors = matched
            .pairs
            .iter()
            .filter(|(g, p)| g.label != p.label)
            .map(|(g, p)| ErrorRow {
                id: g.id.clone(),
                gold: g.label.clone(),
                alt: g.alt.clone(),
                predicted: p.label.clone(),
                score: p.scores.as_ref().map(|s| s.get(&p.label)),
                text: g.text.clone(),
            })
            .collect();
        SystemReport {
            name: name.to_string(),
            matched: matched.pairs.len(),
            missing: matched.missing.len(),
            extra: matched.extra,
            metrics: metrics(&items, labels, seed),
            errors,
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub schema: &'static str,
    pub gold: String,
    pub gold_sentences: usize,
    pub gold_label_counts: std::collections::BTreeMap<String, usize>,
    pub segmentation: Option<SegmentationScore>,
    pub bootstrap: BootstrapInfo,
    pub systems: Vec<SystemReport>,
    /// Macro-F1 of the `cues` rule baseline on the same gold, for reference
    /// (null when the gold's labels are not the stance labels, or what a
    /// `--map` makes of them).
    pub cues_macro_f1: Option<f64>,
    /// The labels of the per-class rows and the confusion matrices, in order.
    #[serde(skip)]
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootstrapInfo {
    pub samples: usize,
    pub seed: u64,
    pub level: f64,
}

pub const EVAL_SCHEMA: &str = "mawqif-eval/1";

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

fn ci(w: &WithInterval) -> String {
    format!("{} [{}–{}]", pct(w.value), pct(w.low), pct(w.high))
}

impl EvalReport {
    /// Rows of the side-by-side table: (metric name, one cell per system).
    fn rows(&self) -> Vec<(String, Vec<String>)> {
        let s = &self.systems;
        let mut rows = vec![
            (
                "sentences matched".into(),
                s.iter().map(|r| r.matched.to_string()).collect(),
            ),
            (
                "unmatched gold / extra pred".into(),
                s.iter()
                    .map(|r| format!("{} / {}", r.missing, r.extra))
                    .collect(),
            ),
            (
                "accuracy % [95% CI]".into(),
                s.iter().map(|r| ci(&r.metrics.accuracy)).collect(),
            ),
            (
                "lenient accuracy %".into(),
                s.iter().map(|r| pct(r.metrics.lenient_accuracy)).collect(),
            ),
            (
                "macro-F1 % [95% CI]".into(),
                s.iter().map(|r| ci(&r.metrics.macro_f1)).collect(),
            ),
            (
                "weighted F1 %".into(),
                s.iter().map(|r| pct(r.metrics.weighted_f1)).collect(),
            ),
            (
                "Cohen's kappa".into(),
                s.iter()
                    .map(|r| format!("{:.3}", r.metrics.kappa))
                    .collect(),
            ),
        ];
        for l in &self.labels {
            rows.push((
                format!("F1 {l} (P/R) %"),
                s.iter()
                    .map(|r| match r.metrics.per_class.get(l.as_str()) {
                        Some(c) => {
                            format!("{} ({}/{})", pct(c.f1), pct(c.precision), pct(c.recall))
                        }
                        None => "-".into(),
                    })
                    .collect(),
            ));
        }
        let Some(cues_macro_f1) = self.cues_macro_f1 else {
            return rows;
        };
        rows.push((
            "vs cues baseline (macro-F1)".into(),
            s.iter()
                .map(|r| {
                    let d = r.metrics.macro_f1.value - cues_macro_f1;
                    if r.name == "cues" {
                        "baseline".into()
                    } else if d > 0.0 {
                        format!("+{} pts", pct(d))
                    } else {
                        format!("{} pts: NOT BETTER THAN CUES", pct(d))
                    }
                })
                .collect(),
        ));
        rows
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn to_table(&self, show_errors: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "gold: {} ({} sentences: {})",
            self.gold,
            self.gold_sentences,
            self.counts_line()
        );
        if let Some(line) = self.segmentation_line() {
            let _ = writeln!(out, "segmentation: {line}");
        }
        let _ = writeln!(out);
        let rows = self.rows();
        let first_w = rows
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = (0..self.systems.len())
            .map(|k| {
                rows.iter()
                    .map(|(_, c)| c[k].chars().count())
                    .chain([self.systems[k].name.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let pad =
            |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
        let mut header = pad("", first_w);
        for (k, s) in self.systems.iter().enumerate() {
            header.push_str("  ");
            header.push_str(&pad(&s.name, widths[k]));
        }
        let _ = writeln!(out, "{}", header.trim_end());
        for (name, cells) in &rows {
            let mut line = pad(name, first_w);
            for (k, c) in cells.iter().enumerate() {
                line.push_str("  ");
                line.push_str(&pad(c, widths[k]));
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        for s in &self.systems {
            let _ = writeln!(
                out,
                "\nconfusion of {} (rows gold, columns predicted):",
                s.name
            );
            // Each column one wider than its name, at least 8; names at least 12.
            let labels = &s.metrics.labels;
            let name_w = labels
                .iter()
                .map(|l| l.as_str().chars().count() + 1)
                .max()
                .unwrap_or(0)
                .max(12);
            let widths: Vec<usize> = labels
                .iter()
                .map(|l| (l.as_str().chars().count() + 1).max(8))
                .collect();
            let mut header = format!("{:<name_w$}", "");
            for (l, w) in labels.iter().zip(&widths) {
                header.push_str(&format!("{:>w$}", l.as_str()));
            }
            let _ = writeln!(out, "{header}");
            for (l, row) in labels.iter().zip(&s.metrics.confusion) {
                let mut line = format!("{:<name_w$}", l.as_str());
                for (n, w) in row.iter().zip(&widths) {
                    line.push_str(&format!("{n:>w$}"));
                }
                let _ = writeln!(out, "{line}");
            }
            if show_errors {
                let _ = writeln!(out, "errors of {} ({}):", s.name, s.errors.len());
                for e in &s.errors {
                    let alt = e.alt.as_ref().map(|a| format!("/{a}")).unwrap_or_default();
                    let score = e.score.map(|p| format!(" p={p:.2}")).unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  {}  gold {}{alt}  pred {}{score}  {}",
                        e.id, e.gold, e.predicted, e.text
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "\n95% intervals: percentile bootstrap, {} resamples, seed {}.",
            self.bootstrap.samples, self.bootstrap.seed
        );
        out
    }

    pub fn to_markdown(&self, show_errors: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Gold: `{}`, {} sentences ({}).\n",
            self.gold,
            self.gold_sentences,
            self.counts_line()
        );
        if let Some(line) = self.segmentation_line() {
            let _ = writeln!(out, "Segmentation: {line}.\n");
        }
        let _ = write!(out, "| metric |");
        for s in &self.systems {
            let _ = write!(out, " {} |", s.name);
        }
        let _ = write!(out, "\n|---|");
        for _ in &self.systems {
            let _ = write!(out, "---|");
        }
        let _ = writeln!(out);
        for (name, cells) in self.rows() {
            let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
        }
        if show_errors {
            for s in &self.systems {
                let _ = writeln!(out, "\n**Errors of {}** ({}):\n", s.name, s.errors.len());
                let _ = writeln!(
                    out,
                    "| id | gold | alt | predicted | p | text |\n|---|---|---|---|---|---|"
                );
                for e in &s.errors {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} |",
                        e.id,
                        e.gold,
                        e.alt.as_ref().map(|a| a.to_string()).unwrap_or_default(),
                        e.predicted,
                        e.score.map(|p| format!("{p:.2}")).unwrap_or_default(),
                        e.text.replace('|', "\\|")
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "\n95% intervals: percentile bootstrap, {} resamples, seed {}.",
            self.bootstrap.samples, self.bootstrap.seed
        );
        out
    }

    fn segmentation_line(&self) -> Option<String> {
        self.segmentation.as_ref().map(|seg| {
            format!(
                "{} predicted units vs {} gold ({} exact); boundary P {} / R {} / F1 {}",
                seg.predicted_units,
                seg.gold_units,
                seg.exact_units,
                pct(seg.boundary_precision),
                pct(seg.boundary_recall),
                pct(seg.boundary_f1)
            )
        })
    }

    fn counts_line(&self) -> String {
        self.gold_label_counts
            .iter()
            .map(|(l, n)| format!("{l} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A system to score: its name, its predictions, and the file they came
/// from (for error messages: a prediction file, or the gold file when the
/// system was run on the gold texts).
pub struct System {
    pub name: String,
    pub predictions: Vec<Prediction>,
    pub from: PathBuf,
}

/// Score every system on one gold set. `source` is the text the gold spans
/// point into; when given, the segmenter is scored too. The `cues` rule
/// baseline is scored alongside, for reference.
pub fn build_report(
    gold_path: &Path,
    gold: &[GoldItem],
    source: Option<&str>,
    systems: &[System],
    map: Option<&LabelMap>,
    seed: u64,
) -> Result<EvalReport> {
    let mapped: Vec<Vec<Prediction>> = systems
        .iter()
        .map(|s| match map {
            Some(m) => s.predictions.iter().map(|p| p.mapped(m)).collect(),
            None => Ok(s.predictions.clone()),
        })
        .collect::<Result<_>>()?;
    let labels = report_labels(
        gold.iter()
            .map(|g| &g.label)
            .chain(mapped.iter().flatten().map(|p| &p.label)),
    );
    let mut counts = std::collections::BTreeMap::new();
    for l in &labels {
        counts.insert(l.as_str().to_string(), 0);
    }
    for g in gold {
        *counts.entry(g.label.as_str().to_string()).or_insert(0) += 1;
    }
    let segmentation = match source {
        Some(text) if gold.iter().all(|g| g.span().is_some()) => {
            let spans: Vec<(usize, usize)> = gold.iter().filter_map(|g| g.span()).collect();
            for g in gold {
                let (start, end) = g.span().unwrap_or((0, 0));
                if text.get(start..end) != Some(g.text.as_str()) {
                    return Err(MawqifError::GoldSpanMismatch {
                        id: g.id.clone(),
                        start,
                        end,
                    });
                }
            }
            Some(segmentation_score(&spans, &Segmenter::new().segment(text)))
        }
        _ => None,
    };
    let mut reports = Vec::new();
    for (system, predictions) in systems.iter().zip(&mapped) {
        let matched = match_predictions(gold, predictions, &system.from)?;
        reports.push(SystemReport::from_matched(
            &system.name,
            &matched,
            &labels,
            seed,
        ));
    }
    // The rule baseline speaks the stance scheme: it is a reference only
    // where the gold does too (or what the map makes of it).
    let cue_labels = match map {
        Some(m) => m.set(&LabelSet::stance())?,
        None => LabelSet::stance(),
    };
    let cues_macro_f1 = if gold.iter().all(|g| cue_labels.contains(&g.label)) {
        let mut cues =
            predictions_for_gold(gold, gold.iter().map(|g| cue_scores(&g.text)).collect());
        if let Some(m) = map {
            cues = cues.iter().map(|p| p.mapped(m)).collect::<Result<_>>()?;
        }
        let cues_matched = match_predictions(gold, &cues, gold_path)?;
        Some(
            SystemReport::from_matched("cues", &cues_matched, &labels, seed)
                .metrics
                .macro_f1
                .value,
        )
    } else {
        None
    };
    Ok(EvalReport {
        schema: EVAL_SCHEMA,
        gold: gold_path.display().to_string(),
        gold_sentences: gold.len(),
        gold_label_counts: counts,
        segmentation,
        bootstrap: BootstrapInfo {
            samples: BOOTSTRAP_SAMPLES,
            seed,
            level: 0.95,
        },
        systems: reports,
        cues_macro_f1,
        labels,
    })
}

/// The labels of a report: the stance scheme in its order when every label
/// is a stance label, else all labels seen, sorted by name.
fn report_labels<'a>(seen: impl Iterator<Item = &'a Label>) -> Vec<Label> {
    let mut found: Vec<Label> = Vec::new();
    for l in seen {
        if !found.contains(l) {
            found.push(l.clone());
        }
    }
    if found.iter().all(|l| Stance::ALL.iter().any(|s| l == s)) {
        return LabelSet::stance().labels().to_vec();
    }
    found.sort();
    found
}
