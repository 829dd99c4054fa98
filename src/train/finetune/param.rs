//! Trainable tensors with their gradients and AdamW state, and the LoRA
//! linear layer: a frozen weight plus a low-rank update `s · B·A` per group
//! of output rows.

use rayon::prelude::*;

use crate::encode::fast::kernels::{matmul, View};
use crate::encode::fast::linear::Linear;
use crate::encode::fast::Precision;
use crate::error::Result;
use crate::rng::SplitMix64;

/// A flat trainable tensor.
pub(super) struct Param {
    pub(super) value: Vec<f32>,
    pub(super) grad: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Whether weight decay applies (matrices yes; biases and norms no).
    decay: bool,
}

impl Param {
    pub(super) fn new(value: Vec<f32>, decay: bool) -> Self {
        let n = value.len();
        Self {
            value,
            grad: vec![0.0; n],
            m: vec![0.0; n],
            v: vec![0.0; n],
            decay,
        }
    }

    pub(super) fn zero_grad(&mut self) {
        self.grad.iter_mut().for_each(|g| *g = 0.0);
    }

    /// One AdamW step (decoupled weight decay), `t` counted from 1.
    pub(super) fn adamw(&mut self, lr: f32, weight_decay: f32, t: i32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let wd = if self.decay { weight_decay } else { 0.0 };
        for (((p, g), m), v) in self
            .value
            .iter_mut()
            .zip(&self.grad)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= lr * ((*m / c1) / ((*v / c2).sqrt() + eps) + wd * *p);
        }
    }
}

/// `y = x·Wᵀ + b + s · Σ_g (x·A_gᵀ)·B_gᵀ` over output row groups `g`
/// (one group for most layers; Q, K and V for the fused attention input).
/// W is frozen; b, A and B train. B starts at zero, so training starts
/// from the base model exactly.
pub(super) struct LoraLinear {
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) groups: usize,
    pub(super) rank: usize,
    pub(super) scale: f32,
    /// `x·Wᵀ` and `dy·W`, with W `[n, k]` frozen: the same kernels as
    /// inference (bf16 where the CPU has it).
    frozen: Linear,
    frozen_t: Linear,
    pub(super) bias: Param,
    /// `[groups · rank, k]`.
    pub(super) a: Param,
    /// `[n, rank]`: group g's rows are `B_g`.
    pub(super) b: Param,
}

/// What the backward pass needs from the forward one.
pub(super) struct LoraCache {
    /// `x·A_catᵀ`: `[tokens, groups · rank]`.
    z: Vec<f32>,
}

impl LoraLinear {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        weight: Vec<f32>,
        bias: Vec<f32>,
        n: usize,
        k: usize,
        groups: usize,
        rank: usize,
        alpha: f32,
        precision: Precision,
        rng: &mut SplitMix64,
    ) -> Result<Self> {
        let mut transposed = vec![0f32; n * k];
        for (r, row) in weight.chunks_exact(k).enumerate() {
            for (c, v) in row.iter().enumerate() {
                transposed[c * n + r] = *v;
            }
        }
        let frozen_t = Linear::new(transposed, k, n, vec![0.0; k], precision)?;
        let frozen = Linear::new(weight, n, k, vec![0.0; n], precision)?;
        // A as in LoRA's reference init (Kaiming-uniform bound 1/sqrt(k)).
        let bound = 1.0 / (k as f64).sqrt();
        let a: Vec<f32> = (0..groups * rank * k)
            .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
            .collect();
        Ok(Self {
            n,
            k,
            groups,
            rank,
            scale: alpha / rank as f32,
            frozen,
            frozen_t,
            bias: Param::new(bias, false),
            a: Param::new(a, true),
            b: Param::new(vec![0.0; n * rank], true),
        })
    }

    pub(super) fn params_mut(&mut self) -> [&mut Param; 3] {
        [&mut self.bias, &mut self.a, &mut self.b]
    }

    fn rows_per_group(&self) -> usize {
        self.n / self.groups
    }

    /// `x` is `[m, k]`; returns `[m, n]` and the cache for backward.
    pub(super) fn forward(&self, x: &[f32], m: usize) -> (Vec<f32>, LoraCache) {
        let (n, k, gr) = (self.n, self.k, self.groups * self.rank);
        let mut y = self.frozen.forward(x, m);
        y.par_chunks_mut(n).for_each(|row| {
            row.iter_mut()
                .zip(&self.bias.value)
                .for_each(|(v, b)| *v += b);
        });
        let mut z = vec![0f32; m * gr];
        matmul(
            &mut z,
            gr,
            false,
            View::new(x, m, k),
            View::new(&self.a.value, gr, k).t(),
        );
        let zs: Vec<f32> = z.iter().map(|v| v * self.scale).collect();
        let rg = self.rows_per_group();
        for g in 0..self.groups {
            let zg = View::strided(&zs[g * self.rank..], m, self.rank, gr, 1);
            let bg = View::new(&self.b.value[g * rg * self.rank..], rg, self.rank);
            matmul(&mut y[g * rg..], n, true, zg, bg.t());
        }
        (y, LoraCache { z })
    }

    /// Accumulate parameter gradients for output gradient `dy` (`[m, n]`) at
    /// input `x`; returns the input gradient when `want_dx`.
    pub(super) fn backward(
        &mut self,
        dy: &[f32],
        x: &[f32],
        cache: &LoraCache,
        m: usize,
        want_dx: bool,
    ) -> Option<Vec<f32>> {
        let (n, k, r, gr) = (self.n, self.k, self.rank, self.groups * self.rank);
        let rg = self.rows_per_group();
        // Bias: column sums, in row order (deterministic).
        for row in dy.chunks_exact(n) {
            for (g, d) in self.bias.grad.iter_mut().zip(row) {
                *g += d;
            }
        }
        // dZ_g = s · dY_g · B_g ; dB_g += s · dY_gᵀ · Z_g.
        let mut dz = vec![0f32; m * gr];
        for g in 0..self.groups {
            let dyg = View::strided(&dy[g * rg..], m, rg, n, 1);
            let bg = View::new(&self.b.value[g * rg * r..], rg, r);
            matmul(&mut dz[g * r..], gr, false, dyg, bg);
            let zg = View::strided(&cache.z[g * r..], m, r, gr, 1);
            let mut db = vec![0f32; rg * r];
            matmul(&mut db, r, false, dyg.t(), zg);
            for (acc, d) in self.b.grad[g * rg * r..(g + 1) * rg * r]
                .iter_mut()
                .zip(&db)
            {
                *acc += self.scale * d;
            }
        }
        dz.par_iter_mut().for_each(|v| *v *= self.scale);
        // dA += dZᵀ · X.
        matmul(
            &mut self.a.grad,
            k,
            true,
            View::new(&dz, m, gr).t(),
            View::new(x, m, k),
        );
        if !want_dx {
            return None;
        }
        // dX = dY · W + dZ · A.
        let mut dx = self.frozen_t.forward(dy, m);
        matmul(
            &mut dx,
            k,
            true,
            View::new(&dz, m, gr),
            View::new(&self.a.value, gr, k),
        );
        Some(dx)
    }

    /// The low-rank update as saved: `A_g` (`[rank, k]`) and `s · B_g`
    /// (`[rows of g, rank]`) for each group.
    pub(super) fn update_factors(&self) -> Vec<(Vec<f32>, Vec<f32>)> {
        let (r, k, rg) = (self.rank, self.k, self.rows_per_group());
        (0..self.groups)
            .map(|g| {
                let a = self.a.value[g * r * k..(g + 1) * r * k].to_vec();
                let b = self.b.value[g * rg * r..(g + 1) * rg * r]
                    .iter()
                    .map(|v| v * self.scale)
                    .collect();
                (a, b)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..len).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect()
    }

    fn layer(seed: u64) -> LoraLinear {
        let (n, k) = (6, 4);
        let mut rng = SplitMix64::new(seed);
        let mut l = LoraLinear::new(
            numbers(n * k, 1),
            numbers(n, 2),
            n,
            k,
            2,
            2,
            4.0,
            Precision::F32,
            &mut rng,
        )
        .unwrap();
        l.b.value = numbers(n * 2, 3);
        l
    }

    /// Loss = Σ y ⊙ w for fixed w: its gradients are checked against finite differences.
    #[test]
    fn gradients_match_finite_differences() {
        let m = 3;
        let x = numbers(m * 4, 4);
        let w = numbers(m * 6, 5);
        let loss = |l: &LoraLinear, x: &[f32]| -> f64 {
            let (y, _) = l.forward(x, m);
            y.iter()
                .zip(&w)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum()
        };
        let mut l = layer(9);
        let (_, cache) = l.forward(&x, m);
        let dx = l.backward(&w, &x, &cache, m, true).unwrap();
        let h = 1e-2f32;
        let check = |analytic: f32, plus: f64, minus: f64, what: &str| {
            let numeric = (plus - minus) / (2.0 * h as f64);
            assert!(
                (analytic as f64 - numeric).abs() < 1e-2 * (1.0 + numeric.abs()),
                "{what}: analytic {analytic}, numeric {numeric}"
            );
        };
        for i in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            check(dx[i], loss(&l, &xp), loss(&l, &xm), "dx");
        }
        for which in 0..3 {
            let len = l.params_mut()[which].value.len();
            for i in 0..len {
                let grad = l.params_mut()[which].grad[i];
                let mut plus = layer(9);
                plus.params_mut()[which].value[i] += h;
                let mut minus = layer(9);
                minus.params_mut()[which].value[i] -= h;
                check(
                    grad,
                    loss(&plus, &x),
                    loss(&minus, &x),
                    &format!("param {which}[{i}]"),
                );
            }
        }
    }

    #[test]
    fn a_zero_update_is_the_base_layer() {
        let mut rng = SplitMix64::new(1);
        let w = numbers(6 * 4, 1);
        let l = LoraLinear::new(
            w.clone(),
            numbers(6, 2),
            6,
            4,
            1,
            2,
            4.0,
            Precision::F32,
            &mut rng,
        )
        .unwrap();
        let x = numbers(4, 3);
        let (y, _) = l.forward(&x, 1);
        for (c, v) in y.iter().enumerate() {
            let want: f32 = l.bias.value[c] + (0..4).map(|j| x[j] * w[c * 4 + j]).sum::<f32>();
            assert!((v - want).abs() < 1e-5);
        }
    }
}
