//! Scalar building blocks of the fast engine, written so that the compiler
//! vectorizes the loops over them (no branches, independent accumulators).

use candle_nn::VarBuilder;
use candle_transformers::models::bert::HiddenAct;
use rayon::prelude::*;

use crate::error::Result;

use super::kernels::{
    widest, Avx512F, EXP_HIGHEST, EXP_LN2_HIGH, EXP_LN2_LOW, EXP_LOWEST, EXP_POLYNOMIAL,
};
use super::to_vec;

/// erf as a rational function of x² on [-4, 4] (erf is ±1 to f32
/// precision beyond): only multiplies, adds and one divide, so loops over
/// it vectorize. The coefficients are the widely used ones of Eigen's
/// `generic_fast_erf_float`; error is a few ulp.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600_2e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329_4e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// e^x for the softmax, vectorizable: 2^n · P(r) with |r| ≤ ln2/2
/// (Cephes' expf polynomial), relative error about 2e-7.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_LOWEST, EXP_HIGHEST);
    let n = (x * std::f32::consts::LOG2_E).round();
    let r = x - n * EXP_LN2_HIGH + n * EXP_LN2_LOW;
    let mut p = EXP_POLYNOMIAL[0];
    for c in &EXP_POLYNOMIAL[1..] {
        p = p * r + c;
    }
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Dot product with 16 independent accumulators, so it vectorizes.
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        let (x, y) = (&a[c * 16..c * 16 + 16], &b[c * 16..c * 16 + 16]);
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 16..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

/// Largest element, with 16 lanes so that it vectorizes.
#[inline(always)]
pub(super) fn max_of(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        for l in 0..16 {
            acc[l] = acc[l].max(a[c * 16 + l]);
        }
    }
    a[chunks * 16..]
        .iter()
        .chain(acc.iter())
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
pub(super) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        for l in 0..16 {
            acc[l] += a[c * 16 + l];
        }
    }
    acc.iter().sum::<f32>() + a[chunks * 16..].iter().sum::<f32>()
}

/// The feed-forward activation, in place; always inlined, so that it
/// vectorizes as wide as the caller is compiled for.
#[inline(always)]
pub(super) fn activate_in_place(x: &mut [f32], act: HiddenAct) {
    match act {
        HiddenAct::Gelu => {
            for v in x {
                *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
        HiddenAct::GeluApproximate => {
            for v in x {
                let inner = 0.797_884_6 * (*v + 0.044_715 * *v * *v * *v);
                *v = 0.5 * *v * (1.0 + inner.tanh());
            }
        }
        HiddenAct::Relu => {
            for v in x {
                *v = v.max(0.0);
            }
        }
    }
}

pub(super) struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    pub(super) fn load(vb: &VarBuilder, h: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: to_vec(vb.get(h, "weight")?)?,
            bias: to_vec(vb.get(h, "bias")?)?,
            eps: eps as f32,
        })
    }

    /// `x = LayerNorm(x + residual)`, row by row.
    pub(super) fn apply_residual(&self, x: &mut [f32], residual: &[f32]) {
        let h = self.weight.len();
        let wide = Avx512F::detect();
        x.par_chunks_mut(h)
            .zip(residual.par_chunks(h))
            .for_each(|(row, res)| {
                widest(wide, || {
                    for (v, r) in row.iter_mut().zip(res) {
                        *v += r;
                    }
                    self.normalize_row(row);
                })
            });
    }

    #[inline(always)]
    pub(super) fn normalize_row(&self, row: &mut [f32]) {
        let h = row.len() as f32;
        let mean = sum(row) / h;
        row.iter_mut().for_each(|v| *v -= mean);
        let var = dot(row, row) / h;
        let inv = 1.0 / (var + self.eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
            *v = *v * inv * w + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
        ] {
            assert!((erf(x) - want).abs() < 2e-7, "erf({x})");
        }
    }

    #[test]
    fn loops_compiled_for_avx512_give_the_same_bits() {
        use crate::encode::fast::kernels::bf16_bits;
        use crate::encode::fast::linear::tests::numbers;
        let Some(cpu) = Avx512F::detect() else {
            crate::encode::fast::skip_without_bf16("AVX-512 compiled loops");
            return;
        };
        // Odd length: the vector loops' tails are covered too.
        let x: Vec<f32> = numbers(4099, 11).iter().map(|v| v * 9.0).collect();
        let elementwise = |x: &[f32]| -> Vec<u32> {
            x.iter()
                .flat_map(|&v| [exp(v).to_bits(), erf(v).to_bits(), bf16_bits(v)])
                .collect()
        };
        let norm = LayerNorm {
            weight: numbers(384, 12),
            bias: numbers(384, 13),
            eps: 1e-12,
        };
        let normalized = |x: &[f32]| -> Vec<u32> {
            let mut rows = x[..384 * 10].to_vec();
            rows.chunks_mut(384).for_each(|r| norm.normalize_row(r));
            rows.iter().map(|v| v.to_bits()).collect()
        };
        assert_eq!(cpu.run(|| elementwise(&x)), elementwise(&x));
        assert_eq!(cpu.run(|| normalized(&x)), normalized(&x));
    }

    #[test]
    fn fast_exp_is_accurate() {
        for i in -800..=800 {
            let x = i as f32 / 10.0;
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            assert!(rel < 1e-6, "exp({x}): {} vs {}", exp(x), x.exp());
        }
    }
}
