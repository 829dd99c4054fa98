//! Metrics of one system against gold: accuracy, lenient accuracy,
//! per-class P/R/F1, macro and weighted F1, Cohen's kappa, the confusion
//! matrix, bootstrap intervals, and boundary scores of the segmentation.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::label::Label;
#[cfg(test)]
use crate::label::Stance;
use crate::rng::SplitMix64;
use crate::text::Segment;

use super::gold::GoldItem;

/// Precision, recall, F1 and support of one label.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
    pub predicted: usize,
}

/// A value with its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WithInterval {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Everything `mawqif eval` reports for one system.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub n: usize,
    pub accuracy: WithInterval,
    pub lenient_accuracy: f64,
    pub macro_f1: WithInterval,
    pub weighted_f1: f64,
    pub kappa: f64,
    pub per_class: BTreeMap<String, ClassMetrics>,
    /// Rows are gold labels, columns predictions, both in the order of
    /// `labels` (the scheme's order).
    pub confusion: Vec<Vec<usize>>,
    /// The labels of `confusion`'s rows and columns (not in the JSON: the
    /// report lists them once).
    #[serde(skip)]
    pub labels: Vec<Label>,
}

/// (gold, alt, predicted) as indices into a label list.
type Indexed = (usize, Option<usize>, usize);

/// Point metrics from (gold, alt, predicted) index triples over `k` labels.
pub fn point_metrics(items: &[Indexed], k: usize) -> (f64, f64, f64, f64, f64, Vec<Vec<usize>>) {
    let n = items.len();
    let mut confusion = vec![vec![0usize; k]; k];
    let mut lenient = 0;
    for &(g, alt, p) in items {
        confusion[g][p] += 1;
        if p == g || Some(p) == alt {
            lenient += 1;
        }
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let (per, macro_f1, weighted) = class_metrics(&confusion);
    let _ = per;
    let nf = n.max(1) as f64;
    let po = correct as f64 / nf;
    let pe: f64 = (0..k)
        .map(|k| {
            let gold_k: usize = confusion[k].iter().sum();
            let pred_k: usize = confusion.iter().map(|row| row[k]).sum();
            (gold_k as f64 / nf) * (pred_k as f64 / nf)
        })
        .sum();
    // Kappa is undefined when chance agreement is total; a perfect match is 1.
    let kappa = if (1.0 - pe).abs() < 1e-12 {
        if correct == n {
            1.0
        } else {
            0.0
        }
    } else {
        (po - pe) / (1.0 - pe)
    };
    (
        po,
        lenient as f64 / nf,
        macro_f1,
        weighted,
        kappa,
        confusion,
    )
}

/// Per-class metrics, macro-F1 over labels seen in gold or predictions, and
/// support-weighted F1.
pub fn class_metrics(confusion: &[Vec<usize>]) -> (Vec<ClassMetrics>, f64, f64) {
    let mut per = vec![
        ClassMetrics {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            support: 0,
            predicted: 0,
        };
        confusion.len()
    ];
    let total: usize = confusion.iter().flatten().sum();
    let mut macro_sum = 0.0;
    let mut macro_n = 0;
    let mut weighted = 0.0;
    for k in 0..confusion.len() {
        let tp = confusion[k][k] as f64;
        let support: usize = confusion[k].iter().sum();
        let predicted: usize = confusion.iter().map(|row| row[k]).sum();
        let precision = if predicted > 0 {
            tp / predicted as f64
        } else {
            0.0
        };
        let recall = if support > 0 {
            tp / support as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        per[k] = ClassMetrics {
            precision,
            recall,
            f1,
            support,
            predicted,
        };
        if support > 0 || predicted > 0 {
            macro_sum += f1;
            macro_n += 1;
        }
        weighted += f1 * support as f64;
    }
    let macro_f1 = if macro_n > 0 {
        macro_sum / macro_n as f64
    } else {
        0.0
    };
    (per, macro_f1, weighted / total.max(1) as f64)
}

pub const BOOTSTRAP_SAMPLES: usize = 1000;
pub const BOOTSTRAP_SEED: u64 = 20_261_129;

/// All metrics with 95% percentile-bootstrap intervals for accuracy and
/// macro-F1. Rows and columns follow `labels` (the scheme's order); a label
/// of `items` that is not in it comes after, in order of appearance.
pub fn metrics(items: &[(Label, Option<Label>, Label)], labels: &[Label], seed: u64) -> Metrics {
    let mut order: Vec<Label> = labels.to_vec();
    let mut index_of = |l: &Label| match order.iter().position(|x| x == l) {
        Some(i) => i,
        None => {
            order.push(l.clone());
            order.len() - 1
        }
    };
    let items: Vec<Indexed> = items
        .iter()
        .map(|(g, alt, p)| (index_of(g), alt.as_ref().map(&mut index_of), index_of(p)))
        .collect();
    let k = order.len();
    let (acc, lenient, macro_f1, weighted, kappa, confusion) = point_metrics(&items, k);
    let (per, _, _) = class_metrics(&confusion);
    let mut rng = SplitMix64::new(seed);
    let mut accs = Vec::with_capacity(BOOTSTRAP_SAMPLES);
    let mut macros = Vec::with_capacity(BOOTSTRAP_SAMPLES);
    if !items.is_empty() {
        let mut sample = Vec::with_capacity(items.len());
        for _ in 0..BOOTSTRAP_SAMPLES {
            sample.clear();
            for _ in 0..items.len() {
                sample.push(items[rng.below(items.len())]);
            }
            let (a, _, m, _, _, _) = point_metrics(&sample, k);
            accs.push(a);
            macros.push(m);
        }
    }
    let interval = |value: f64, mut xs: Vec<f64>| {
        if xs.is_empty() {
            return WithInterval {
                value,
                low: value,
                high: value,
            };
        }
        xs.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| xs[((q * (xs.len() - 1) as f64).round() as usize).min(xs.len() - 1)];
        WithInterval {
            value,
            low: at(0.025),
            high: at(0.975),
        }
    };
    Metrics {
        n: items.len(),
        accuracy: interval(acc, accs),
        lenient_accuracy: lenient,
        macro_f1: interval(macro_f1, macros),
        weighted_f1: weighted,
        kappa,
        per_class: order
            .iter()
            .zip(per)
            .map(|(l, c)| (l.as_str().to_string(), c))
            .collect(),
        confusion,
        labels: order,
    }
}

/// Boundary precision / recall / F1 of predicted units against gold units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SegmentationScore {
    pub gold_units: usize,
    pub predicted_units: usize,
    pub exact_units: usize,
    pub boundary_precision: f64,
    pub boundary_recall: f64,
    pub boundary_f1: f64,
}

/// Boundaries are the start and end offsets of units.
pub fn segmentation_score(gold: &[(usize, usize)], predicted: &[Segment]) -> SegmentationScore {
    let gold_b: HashSet<usize> = gold.iter().flat_map(|&(s, e)| [s, e]).collect();
    let pred_b: HashSet<usize> = predicted.iter().flat_map(|s| [s.start, s.end]).collect();
    let hit = gold_b.intersection(&pred_b).count() as f64;
    let precision = if pred_b.is_empty() {
        0.0
    } else {
        hit / pred_b.len() as f64
    };
    let recall = if gold_b.is_empty() {
        0.0
    } else {
        hit / gold_b.len() as f64
    };
    let gold_spans: HashSet<(usize, usize)> = gold.iter().copied().collect();
    SegmentationScore {
        gold_units: gold.len(),
        predicted_units: predicted.len(),
        exact_units: predicted
            .iter()
            .filter(|s| gold_spans.contains(&(s.start, s.end)))
            .count(),
        boundary_precision: precision,
        boundary_recall: recall,
        boundary_f1: if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        },
    }
}

/// The most frequent gold label (ties: the earlier label of `labels`).
pub fn majority_label(gold: &[GoldItem], labels: &[Label]) -> Option<Label> {
    let count = |l: &Label| gold.iter().filter(|g| g.label == *l).count();
    let mut best: Option<(&Label, usize)> = None;
    for l in labels {
        let c = count(l);
        if best.is_none_or(|(_, b)| c > b) {
            best = Some((l, c));
        }
    }
    best.map(|(l, _)| l.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Stance::*;

    fn stance() -> Vec<Label> {
        Stance::ALL.iter().map(|s| s.label()).collect()
    }

    fn metrics(items: &[(Stance, Option<Stance>, Stance)], seed: u64) -> Metrics {
        let items: Vec<_> = items
            .iter()
            .map(|(g, a, p)| (g.label(), a.map(|a| a.label()), p.label()))
            .collect();
        super::metrics(&items, &stance(), seed)
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn perfect_prediction() {
        let items = vec![
            (Report, None, Report),
            (Quotation, None, Quotation),
            (Opinion, None, Opinion),
        ];
        let m = metrics(&items, 1);
        close(m.accuracy.value, 1.0);
        close(m.macro_f1.value, 1.0);
        close(m.kappa, 1.0);
        close(m.accuracy.low, 1.0);
        // Endorsement has zero support and is never predicted: left out of macro-F1.
        assert_eq!(m.per_class["endorsement"].support, 0);
    }

    #[test]
    fn hand_computed_case() {
        // gold:  R R R Q Q E ; pred: R R Q Q E E ; alt of item 3 is quotation.
        let items = vec![
            (Report, None, Report),
            (Report, None, Report),
            (Report, Some(Quotation), Quotation),
            (Quotation, None, Quotation),
            (Quotation, None, Endorsement),
            (Endorsement, None, Endorsement),
        ];
        let m = metrics(&items, 7);
        close(m.accuracy.value, 4.0 / 6.0);
        close(m.lenient_accuracy, 5.0 / 6.0);
        // report: P=2/2 R=2/3 F1=0.8; quotation: P=1/2 R=1/2 F1=0.5;
        // endorsement: P=1/2 R=1 F1=2/3; opinion: absent everywhere, excluded.
        close(m.per_class["report"].f1, 0.8);
        close(m.per_class["quotation"].f1, 0.5);
        close(m.per_class["endorsement"].f1, 2.0 / 3.0);
        close(m.macro_f1.value, (0.8 + 0.5 + 2.0 / 3.0) / 3.0);
        close(
            m.weighted_f1,
            (3.0 * 0.8 + 2.0 * 0.5 + 1.0 * 2.0 / 3.0) / 6.0,
        );
        // po = 4/6; pe = (3/6)(2/6) + (2/6)(2/6) + (1/6)(2/6) = 12/36.
        close(m.kappa, (4.0 / 6.0 - 1.0 / 3.0) / (1.0 - 1.0 / 3.0));
        assert_eq!(m.confusion[1][2], 1);
        assert!(m.accuracy.low <= m.accuracy.value && m.accuracy.value <= m.accuracy.high);
    }

    #[test]
    fn zero_support_class_that_is_predicted_counts_in_macro() {
        // Opinion never in gold but predicted once: its F1 is 0 and it counts.
        let items = vec![(Report, None, Report), (Report, None, Opinion)];
        let m = metrics(&items, 3);
        close(m.per_class["report"].f1, 2.0 * 1.0 * 0.5 / 1.5);
        close(m.per_class["opinion"].precision, 0.0);
        close(m.macro_f1.value, (2.0 / 3.0 + 0.0) / 2.0);
    }

    #[test]
    fn bootstrap_is_reproducible() {
        let items: Vec<_> = (0..30)
            .map(|k| (Stance::ALL[k % 4], None, Stance::ALL[(k / 2) % 4]))
            .collect();
        let a = metrics(&items, 42);
        let b = metrics(&items, 42);
        assert_eq!(a.accuracy, b.accuracy);
        assert_eq!(a.macro_f1, b.macro_f1);
    }

    #[test]
    fn any_label_set_two_and_three_labels() {
        let l = |n: &str| Label::new(n).unwrap();
        let (s, o) = (l("SUBJ"), l("OBJ"));
        // gold S S O O ; pred S O O O: SUBJ P=1 R=1/2 F1=2/3; OBJ P=2/3 R=1 F1=0.8.
        let items = vec![
            (s.clone(), None, s.clone()),
            (s.clone(), None, o.clone()),
            (o.clone(), None, o.clone()),
            (o.clone(), None, o.clone()),
        ];
        let m = super::metrics(&items, &[o.clone(), s.clone()], 5);
        close(m.per_class["SUBJ"].f1, 2.0 / 3.0);
        close(m.per_class["OBJ"].f1, 0.8);
        close(m.macro_f1.value, (2.0 / 3.0 + 0.8) / 2.0);
        assert_eq!(m.confusion, vec![vec![2, 0], vec![1, 1]]);
        // A label outside the given order is appended, not dropped.
        let three = vec![(l("pos"), None, l("neg")), (l("neu"), None, l("neu"))];
        let m = super::metrics(&three, &[l("neg"), l("pos")], 5);
        assert_eq!(m.labels, vec![l("neg"), l("pos"), l("neu")]);
        assert_eq!(m.confusion[1][0], 1);
        assert_eq!(m.confusion[2][2], 1);
    }

    #[test]
    fn segmentation_boundaries() {
        let gold = vec![(0, 10), (11, 20)];
        let pred = vec![Segment {
            index: 0,
            start: 0,
            end: 20,
            text: String::new(),
        }];
        let s = segmentation_score(&gold, &pred);
        close(s.boundary_precision, 1.0);
        close(s.boundary_recall, 0.5);
        assert_eq!(s.exact_units, 0);
    }
}
