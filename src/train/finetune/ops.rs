//! Forward and backward passes of the non-linear parts of a BERT layer:
//! layer norm, GELU, and per-sentence softmax attention, on packed rows.

use rayon::prelude::*;

use crate::encode::fast::kernels::{matmul, View};
use crate::encode::fast::math::erf;

/// Rows of a layer norm's input, normalized, and their 1/σ: what backward needs.
pub(super) struct NormCache {
    pub(super) normed: Vec<f32>,
    pub(super) inv_std: Vec<f32>,
}

/// `y = γ ⊙ (x − μ)/σ + β` per row of width `gamma.len()`.
pub(super) fn layer_norm(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> (Vec<f32>, NormCache) {
    let h = gamma.len();
    let rows = x.len() / h;
    let mut normed = vec![0f32; x.len()];
    let mut inv_std = vec![0f32; rows];
    normed
        .par_chunks_mut(h)
        .zip(inv_std.par_iter_mut())
        .zip(x.par_chunks(h))
        .for_each(|((out, inv), row)| {
            let mean = row.iter().sum::<f32>() / h as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
            *inv = 1.0 / (var + eps).sqrt();
            for (o, v) in out.iter_mut().zip(row) {
                *o = (v - mean) * *inv;
            }
        });
    let mut y = normed.clone();
    y.par_chunks_mut(h).for_each(|row| {
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = *v * g + b;
        }
    });
    (y, NormCache { normed, inv_std })
}

/// Input gradient of a layer norm; γ and β gradients are added to `dgamma`, `dbeta`.
pub(super) fn layer_norm_backward(
    dy: &[f32],
    cache: &NormCache,
    gamma: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Vec<f32> {
    let h = gamma.len();
    for (row, normed) in dy.chunks_exact(h).zip(cache.normed.chunks_exact(h)) {
        for c in 0..h {
            dgamma[c] += row[c] * normed[c];
            dbeta[c] += row[c];
        }
    }
    let mut dx = vec![0f32; dy.len()];
    dx.par_chunks_mut(h)
        .zip(dy.par_chunks(h))
        .zip(cache.normed.par_chunks(h))
        .zip(cache.inv_std.par_iter())
        .for_each(|(((out, dyr), xr), inv)| {
            let mut mean_d = 0f32;
            let mut mean_dx = 0f32;
            for c in 0..h {
                let d = dyr[c] * gamma[c];
                mean_d += d;
                mean_dx += d * xr[c];
            }
            mean_d /= h as f32;
            mean_dx /= h as f32;
            for c in 0..h {
                let d = dyr[c] * gamma[c];
                out[c] = inv * (d - mean_d - xr[c] * mean_dx);
            }
        });
    dx
}

/// GELU (erf form), as BERT's `gelu`.
pub(super) fn gelu(u: &[f32]) -> Vec<f32> {
    u.par_iter()
        .map(|&v| 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2)))
        .collect()
}

/// `dg ⊙ gelu'(u)`.
pub(super) fn gelu_backward(dg: &[f32], u: &[f32]) -> Vec<f32> {
    let inv_sqrt_2pi = 0.398_942_3_f32;
    dg.par_iter()
        .zip(u.par_iter())
        .map(|(&d, &v)| {
            let cdf = 0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = inv_sqrt_2pi * (-0.5 * v * v).exp();
            d * (cdf + v * pdf)
        })
        .collect()
}

/// Attention probabilities of every (sentence, head), kept for backward.
pub(super) struct AttentionCache {
    /// Per task (sentence-major, then head): `len × len` probabilities.
    probs: Vec<Vec<f32>>,
}

/// Per-sentence softmax attention on fused `qkv` rows `[T, 3h]`; returns
/// the context `[T, h]`. `offsets` are `(first row, length)` per sentence.
pub(super) fn attention(
    qkv: &[f32],
    offsets: &[(usize, usize)],
    hidden: usize,
    heads: usize,
) -> (Vec<f32>, AttentionCache) {
    let (h, d) = (hidden, hidden / heads);
    let scale = 1.0 / (d as f32).sqrt();
    let stride = 3 * h;
    let total: usize = offsets.iter().map(|&(_, len)| len).sum();
    let tasks: Vec<(usize, usize, usize)> = offsets
        .iter()
        .flat_map(|&(start, len)| (0..heads).map(move |head| (start, len, head)))
        .collect();
    let results: Vec<(Vec<f32>, Vec<f32>)> = tasks
        .par_iter()
        .map(|&(start, len, head)| {
            let at = start * stride + head * d;
            let q = View::strided(&qkv[at..], len, d, stride, 1);
            let k = View::strided(&qkv[at + h..], len, d, stride, 1);
            let v = View::strided(&qkv[at + 2 * h..], len, d, stride, 1);
            let mut p = vec![0f32; len * len];
            matmul(&mut p, len, false, q, k.t());
            for row in p.chunks_exact_mut(len) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) * scale;
                let mut sum = 0f32;
                for s in row.iter_mut() {
                    *s = (*s * scale - max).exp();
                    sum += *s;
                }
                row.iter_mut().for_each(|s| *s /= sum);
            }
            let mut ctx = vec![0f32; len * d];
            matmul(&mut ctx, d, false, View::new(&p, len, len), v);
            (p, ctx)
        })
        .collect();
    let mut context = vec![0f32; total * h];
    let mut probs = Vec::with_capacity(tasks.len());
    for (&(start, len, head), (p, ctx)) in tasks.iter().zip(results) {
        for i in 0..len {
            context[(start + i) * h + head * d..][..d].copy_from_slice(&ctx[i * d..(i + 1) * d]);
        }
        probs.push(p);
    }
    (context, AttentionCache { probs })
}

/// Gradient of the fused `qkv` rows from the context gradient `dctx` `[T, h]`.
pub(super) fn attention_backward(
    dctx: &[f32],
    qkv: &[f32],
    cache: &AttentionCache,
    offsets: &[(usize, usize)],
    hidden: usize,
    heads: usize,
) -> Vec<f32> {
    let (h, d) = (hidden, hidden / heads);
    let scale = 1.0 / (d as f32).sqrt();
    let stride = 3 * h;
    let total: usize = offsets.iter().map(|&(_, len)| len).sum();
    let tasks: Vec<(usize, usize, usize)> = offsets
        .iter()
        .flat_map(|&(start, len)| (0..heads).map(move |head| (start, len, head)))
        .collect();
    let results: Vec<[Vec<f32>; 3]> = tasks
        .par_iter()
        .zip(cache.probs.par_iter())
        .map(|(&(start, len, head), p)| {
            let at = start * stride + head * d;
            let q = View::strided(&qkv[at..], len, d, stride, 1);
            let k = View::strided(&qkv[at + h..], len, d, stride, 1);
            let v = View::strided(&qkv[at + 2 * h..], len, d, stride, 1);
            let dc = View::strided(&dctx[start * h + head * d..], len, d, h, 1);
            let probs = View::new(p, len, len);
            // dV = Pᵀ·dC ; dP = dC·Vᵀ.
            let mut dv = vec![0f32; len * d];
            matmul(&mut dv, d, false, probs.t(), dc);
            let mut ds = vec![0f32; len * len];
            matmul(&mut ds, len, false, dc, v.t());
            // dS = P ⊙ (dP − Σ_j dP_j P_j), times the score scale.
            for (row, pi) in ds.chunks_exact_mut(len).zip(p.chunks_exact(len)) {
                let dot: f32 = row.iter().zip(pi).map(|(a, b)| a * b).sum();
                for (g, pj) in row.iter_mut().zip(pi) {
                    *g = pj * (*g - dot) * scale;
                }
            }
            // dQ = dS·K ; dK = dSᵀ·Q.
            let mut dq = vec![0f32; len * d];
            matmul(&mut dq, d, false, View::new(&ds, len, len), k);
            let mut dk = vec![0f32; len * d];
            matmul(&mut dk, d, false, View::new(&ds, len, len).t(), q);
            [dq, dk, dv]
        })
        .collect();
    let mut dqkv = vec![0f32; total * stride];
    for (&(start, len, head), parts) in tasks.iter().zip(results) {
        for (which, part) in parts.iter().enumerate() {
            for i in 0..len {
                dqkv[(start + i) * stride + which * h + head * d..][..d]
                    .copy_from_slice(&part[i * d..(i + 1) * d]);
            }
        }
    }
    dqkv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn numbers(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..len).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect()
    }

    fn weighted(y: &[f32], w: &[f32]) -> f64 {
        y.iter()
            .zip(w)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    }

    fn assert_close(analytic: f32, numeric: f64, what: &str) {
        assert!(
            (analytic as f64 - numeric).abs() < 2e-2 * (1.0 + numeric.abs()),
            "{what}: analytic {analytic}, numeric {numeric}"
        );
    }

    #[test]
    fn layer_norm_gradients_match_finite_differences() {
        let h = 5;
        let x = numbers(2 * h, 1);
        let (gamma, beta) = (numbers(h, 2), numbers(h, 3));
        let w = numbers(2 * h, 4);
        let (_, cache) = layer_norm(&x, &gamma, &beta, 1e-5);
        let (mut dg, mut db) = (vec![0f32; h], vec![0f32; h]);
        let dx = layer_norm_backward(&w, &cache, &gamma, &mut dg, &mut db);
        let eps = 1e-2f32;
        for i in 0..x.len() {
            let (mut p, mut m) = (x.clone(), x.clone());
            p[i] += eps;
            m[i] -= eps;
            let num = (weighted(&layer_norm(&p, &gamma, &beta, 1e-5).0, &w)
                - weighted(&layer_norm(&m, &gamma, &beta, 1e-5).0, &w))
                / (2.0 * eps as f64);
            assert_close(dx[i], num, "dx");
        }
        for i in 0..h {
            let (mut p, mut m) = (gamma.clone(), gamma.clone());
            p[i] += eps;
            m[i] -= eps;
            let num = (weighted(&layer_norm(&x, &p, &beta, 1e-5).0, &w)
                - weighted(&layer_norm(&x, &m, &beta, 1e-5).0, &w))
                / (2.0 * eps as f64);
            assert_close(dg[i], num, "dgamma");
        }
    }

    #[test]
    fn gelu_gradient_matches_finite_differences() {
        let u = numbers(20, 5).iter().map(|v| v * 3.0).collect::<Vec<_>>();
        let ones = vec![1f32; u.len()];
        let d = gelu_backward(&ones, &u);
        let eps = 1e-3f32;
        for i in 0..u.len() {
            let num = (gelu(&[u[i] + eps])[0] - gelu(&[u[i] - eps])[0]) as f64 / (2.0 * eps as f64);
            assert_close(d[i], num, "gelu'");
        }
    }

    #[test]
    fn attention_gradients_match_finite_differences() {
        let (hidden, heads) = (4, 2);
        let offsets = [(0, 3), (3, 2)];
        let qkv = numbers(5 * 3 * hidden, 6);
        let w = numbers(5 * hidden, 7);
        let (_, cache) = attention(&qkv, &offsets, hidden, heads);
        let grad = attention_backward(&w, &qkv, &cache, &offsets, hidden, heads);
        let eps = 1e-2f32;
        for i in 0..qkv.len() {
            let (mut p, mut m) = (qkv.clone(), qkv.clone());
            p[i] += eps;
            m[i] -= eps;
            let num = (weighted(&attention(&p, &offsets, hidden, heads).0, &w)
                - weighted(&attention(&m, &offsets, hidden, heads).0, &w))
                / (2.0 * eps as f64);
            assert_close(grad[i], num, "dqkv");
        }
    }
}
