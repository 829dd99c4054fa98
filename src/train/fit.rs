//! Fitting a classifier head on feature rows.
//!
//! Contract: [`train_head`] fits a softmax regression (L2, class weights) or a
//! one-hidden-layer MLP on feature vectors; same data, options and seed give
//! the same head, bit for bit (fixed order of float operations, seeded init,
//! full-batch Adam).

use ndarray::{Array1, Array2, Axis};

use crate::error::{MawqifError, Result};
use crate::head::{FeatureSpec, Head, HeadSpec};
use crate::label::{Label, LabelSet};
use crate::model::Pooling;
use crate::rng::SplitMix64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    Softmax,
    Mlp { hidden: usize },
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub kind: HeadKind,
    pub l2: f32,
    pub epochs: usize,
    pub learning_rate: f32,
    pub class_weights: bool,
    pub seed: u64,
    /// The head's labels in order (default: the labels of the training data,
    /// see [`LabelSet::covering`]).
    pub labels: Option<LabelSet>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            kind: HeadKind::Softmax,
            l2: 0.3,
            epochs: 400,
            learning_rate: 0.01,
            class_weights: true,
            seed: 13,
            labels: None,
        }
    }
}

/// Adam state for one parameter array.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    fn new(n: usize) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32, t: i32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let c1 = 1.0 - b1.powi(t);
        let c2 = 1.0 - b2.powi(t);
        for i in 0..params.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * grads[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * grads[i] * grads[i];
            params[i] -= lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + eps);
        }
    }
}

fn softmax_rows(z: &mut Array2<f32>) {
    for mut row in z.rows_mut() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
}

/// Fit a head on feature rows `x` with labels `y`.
pub fn train_head(
    x: &[Vec<f32>],
    y: &[Label],
    spec: HeadSpec,
    options: &TrainOptions,
) -> Result<Head> {
    let n = x.len();
    if n == 0 || n != y.len() {
        return Err(MawqifError::NoTrainingData);
    }
    let d = spec.features.len();
    if let Some(row) = x.iter().find(|r| r.len() != d) {
        return Err(MawqifError::FeatureLength {
            expected: d,
            found: row.len(),
        });
    }
    // Standardize: mean 0, unit variance per feature (scale stored as 1/std).
    let xa = Array2::from_shape_fn((n, d), |(i, j)| x[i][j]);
    let mean = xa.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(d));
    let var = xa.var_axis(Axis(0), 0.0);
    let scale = var.mapv(|v| if v > 1e-12 { 1.0 / v.sqrt() } else { 1.0 });
    let xs = (&xa - &mean) * &scale;

    let k = spec.labels.len();
    let y: Vec<usize> = y
        .iter()
        .map(|l| {
            spec.labels.index(l).ok_or_else(|| {
                MawqifError::BadLabelSet(format!(
                    "training label {l:?} is not one of the head's labels {:?}",
                    spec.labels.labels()
                ))
            })
        })
        .collect::<Result<_>>()?;
    let mut counts = vec![0usize; k];
    for &l in &y {
        counts[l] += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let class_w: Vec<f32> = counts
        .iter()
        .map(|&c| {
            if !options.class_weights || c == 0 {
                1.0
            } else {
                n as f32 / (present as f32 * c as f32)
            }
        })
        .collect();
    let mut onehot = Array2::<f32>::zeros((n, k));
    let mut row_w = Array1::<f32>::zeros(n);
    for (i, &l) in y.iter().enumerate() {
        onehot[[i, l]] = 1.0;
        row_w[i] = class_w[l];
    }
    let w_sum = row_w.sum();
    let mut rng = SplitMix64::new(options.seed);
    let mut init = |rows: usize, cols: usize| -> Array2<f32> {
        let bound = (6.0 / (rows + cols) as f64).sqrt();
        Array2::from_shape_fn((rows, cols), |_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
    };
    let layers = match options.kind {
        HeadKind::Softmax => {
            let mut w = Array2::<f32>::zeros((k, d));
            let mut b = Array1::<f32>::zeros(k);
            let (mut aw, mut ab) = (Adam::new(k * d), Adam::new(k));
            for t in 1..=options.epochs as i32 {
                let mut p = xs.dot(&w.t()) + &b;
                softmax_rows(&mut p);
                let delta = (&p - &onehot) * row_w.view().insert_axis(Axis(1)) / w_sum;
                let gw = delta.t().dot(&xs) + &w * options.l2;
                let gb = delta.sum_axis(Axis(0));
                aw.step(
                    w.as_slice_mut().unwrap_or_default(),
                    gw.as_standard_layout().as_slice().unwrap_or_default(),
                    options.learning_rate,
                    t,
                );
                ab.step(
                    b.as_slice_mut().unwrap_or_default(),
                    gb.as_slice().unwrap_or_default(),
                    options.learning_rate,
                    t,
                );
            }
            vec![(w.into_raw_vec_and_offset().0, b.to_vec())]
        }
        HeadKind::Mlp { hidden } => {
            let mut w1 = init(hidden, d);
            let mut b1 = Array1::<f32>::zeros(hidden);
            let mut w2 = init(k, hidden);
            let mut b2 = Array1::<f32>::zeros(k);
            let (mut a1, mut ab1, mut a2, mut ab2) = (
                Adam::new(hidden * d),
                Adam::new(hidden),
                Adam::new(k * hidden),
                Adam::new(k),
            );
            for t in 1..=options.epochs as i32 {
                let h_pre = xs.dot(&w1.t()) + &b1;
                let h = h_pre.mapv(|v| v.max(0.0));
                let mut p = h.dot(&w2.t()) + &b2;
                softmax_rows(&mut p);
                let delta = (&p - &onehot) * row_w.view().insert_axis(Axis(1)) / w_sum;
                let gw2 = delta.t().dot(&h) + &w2 * options.l2;
                let gb2 = delta.sum_axis(Axis(0));
                let dh = delta.dot(&w2) * h_pre.mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
                let gw1 = dh.t().dot(&xs) + &w1 * options.l2;
                let gb1 = dh.sum_axis(Axis(0));
                let lr = options.learning_rate;
                a2.step(
                    w2.as_slice_mut().unwrap_or_default(),
                    gw2.as_standard_layout().as_slice().unwrap_or_default(),
                    lr,
                    t,
                );
                ab2.step(
                    b2.as_slice_mut().unwrap_or_default(),
                    gb2.as_slice().unwrap_or_default(),
                    lr,
                    t,
                );
                a1.step(
                    w1.as_slice_mut().unwrap_or_default(),
                    gw1.as_standard_layout().as_slice().unwrap_or_default(),
                    lr,
                    t,
                );
                ab1.step(
                    b1.as_slice_mut().unwrap_or_default(),
                    gb1.as_slice().unwrap_or_default(),
                    lr,
                    t,
                );
            }
            vec![
                (w1.into_raw_vec_and_offset().0, b1.to_vec()),
                (w2.into_raw_vec_and_offset().0, b2.to_vec()),
            ]
        }
    };
    Ok(Head {
        spec,
        feature_mean: mean.to_vec(),
        feature_scale: scale.to_vec(),
        layers,
    })
}

/// The `head.json` of a head for an encoder.
pub fn head_spec(
    labels: LabelSet,
    encoder_id: &str,
    encoder_revision: &str,
    pooling: Pooling,
    features: FeatureSpec,
    kind: HeadKind,
) -> HeadSpec {
    let hidden = match kind {
        HeadKind::Softmax => None,
        HeadKind::Mlp { hidden } => Some(hidden),
    };
    HeadSpec::new(
        labels,
        encoder_id,
        encoder_revision,
        pooling,
        features,
        hidden,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Vec<Vec<f32>>, Vec<Label>) {
        // Four separable clusters in 3-D.
        let mut rng = SplitMix64::new(5);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for (k, l) in LabelSet::stance().labels().iter().enumerate() {
            for _ in 0..20 {
                let mut v: Vec<f32> = (0..3).map(|_| rng.unit() as f32 * 0.3).collect();
                if k < 3 {
                    v[k] += 2.0;
                } else {
                    v.iter_mut().for_each(|a| *a -= 1.0);
                }
                x.push(v);
                y.push(l.clone());
            }
        }
        (x, y)
    }

    fn spec(kind: HeadKind) -> HeadSpec {
        head_spec(
            LabelSet::stance(),
            "toy",
            "r",
            Pooling::Mean,
            FeatureSpec {
                embedding_dim: 3,
                cues: false,
                context: false,
                context_embedding: false,
            },
            kind,
        )
    }

    #[test]
    fn softmax_and_mlp_learn_separable_data_reproducibly() {
        let (x, y) = toy();
        for kind in [HeadKind::Softmax, HeadKind::Mlp { hidden: 8 }] {
            let opts = TrainOptions {
                kind,
                ..Default::default()
            };
            let a = train_head(&x, &y, spec(kind), &opts).unwrap();
            let b = train_head(&x, &y, spec(kind), &opts).unwrap();
            assert_eq!(a.layers, b.layers, "same seed, same head");
            let correct = x
                .iter()
                .zip(&y)
                .filter(|(v, l)| a.predict(v).best() == **l)
                .count();
            assert_eq!(correct, x.len(), "{kind:?}");
        }
    }

    #[test]
    fn a_three_label_head_learns_its_own_labels_and_refuses_others() {
        let names = LabelSet::parse("neg,neu,pos").unwrap();
        let mut rng = SplitMix64::new(9);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (k, l) in names.labels().iter().enumerate() {
            for _ in 0..15 {
                let mut v: Vec<f32> = (0..3).map(|_| rng.unit() as f32 * 0.3).collect();
                v[k] += 2.0;
                x.push(v);
                y.push(l.clone());
            }
        }
        let mut s = spec(HeadKind::Softmax);
        s.labels = names.clone();
        let head = train_head(&x, &y, s.clone(), &TrainOptions::default()).unwrap();
        assert_eq!(head.layers[0].1.len(), 3);
        let correct = x
            .iter()
            .zip(&y)
            .filter(|(v, l)| head.predict(v).best() == **l)
            .count();
        assert_eq!(correct, x.len());
        y[0] = Label::new("report").unwrap();
        assert!(train_head(&x, &y, s, &TrainOptions::default()).is_err());
    }
}
