//! Linear layers `y = x · Wᵀ + b` of the fast engine, in f32 (through
//! `gemm`) or bf16 (weights packed once for the AVX-512 BF16 kernel).

use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::error::{MawqifError, Result};

use super::kernels::{self, bf16_bits, Avx512Bf16, PackedBf16, RowFinish, LANES, NB};
use super::{to_vec, Precision};

enum LinearWeights {
    F32(Vec<f32>),
    Bf16(PackedBf16),
}

/// A linear layer with `W` of shape `[n, k]`.
pub(crate) struct Linear {
    n: usize,
    k: usize,
    bias: Vec<f32>,
    weights: LinearWeights,
}

impl Linear {
    /// Fails with [`MawqifError::Bf16Unsupported`] for bf16 on a CPU without
    /// AVX-512 BF16: the kernel can only be built where it can run.
    pub(crate) fn new(
        w: Vec<f32>,
        n: usize,
        k: usize,
        bias: Vec<f32>,
        precision: Precision,
    ) -> Result<Self> {
        if w.len() != n * k || bias.len() != n {
            return Err(MawqifError::ShapeMismatch(format!(
                "a linear layer of {n} × {k} got {} weights and {} biases",
                w.len(),
                bias.len()
            )));
        }
        let weights = match precision {
            Precision::F32 => LinearWeights::F32(w),
            Precision::Bf16 => {
                let cpu = Avx512Bf16::detect().ok_or(MawqifError::Bf16Unsupported)?;
                LinearWeights::Bf16(pack_bf16(&w, n, k, &bias, cpu))
            }
        };
        Ok(Self {
            n,
            k,
            bias,
            weights,
        })
    }

    pub(super) fn load(vb: &VarBuilder, n: usize, k: usize, precision: Precision) -> Result<Self> {
        let w = to_vec(vb.get((n, k), "weight")?)?;
        let b = to_vec(vb.get(n, "bias")?)?;
        Self::new(w, n, k, b, precision)
    }

    /// Stack the rows of several layers with the same input: one product
    /// instead of three for Q, K and V.
    pub(super) fn load_fused(
        vbs: &[VarBuilder],
        n: usize,
        k: usize,
        precision: Precision,
    ) -> Result<Self> {
        let mut w = Vec::with_capacity(vbs.len() * n * k);
        let mut b = Vec::with_capacity(vbs.len() * n);
        for vb in vbs {
            w.extend(to_vec(vb.get((n, k), "weight")?)?);
            b.extend(to_vec(vb.get(n, "bias")?)?);
        }
        Self::new(w, vbs.len() * n, k, b, precision)
    }

    /// `x` is `[m, k]`; returns `[m, n]`.
    pub(crate) fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * self.n];
        self.forward_into(x, m, &mut y, &mut Vec::new());
        y
    }

    /// `y = x · Wᵀ + b` into `y` (`[m, n]`; its old values do not matter).
    /// `scratch` holds bf16 activations: the encoder passes the same
    /// buffers to every layer, so nothing is allocated or zeroed per layer.
    pub(crate) fn forward_into(&self, x: &[f32], m: usize, y: &mut [f32], scratch: &mut Vec<u32>) {
        self.forward_into_then(x, m, y, scratch, None)
    }

    /// [`Linear::forward_into`], then `finish` on every row of `y` (on the
    /// bf16 path, on each block of rows as soon as it is done).
    pub(crate) fn forward_into_then(
        &self,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        scratch: &mut Vec<u32>,
        finish: RowFinish<'_>,
    ) {
        assert!(y.len() == m * self.n, "output buffer of the wrong size");
        match &self.weights {
            LinearWeights::F32(w) => {
                for row in y.chunks_exact_mut(self.n) {
                    row.copy_from_slice(&self.bias);
                }
                kernels::gemm_f32(x, w, y, m, self.n, self.k);
                if let Some(finish) = finish {
                    y.par_chunks_mut(self.n).for_each(finish);
                }
            }
            LinearWeights::Bf16(packed) => {
                kernels::matmul_bf16(packed, x, y, m, self.n, self.k, scratch, finish)
            }
        }
    }

    /// Output width `n`.
    pub(crate) fn outputs(&self) -> usize {
        self.n
    }

    /// Which kernel this layer's products run on. AMX needs k in whole
    /// tiles, so one encoder can mix AMX and AVX-512 layers.
    pub(crate) fn kernel(&self) -> ProductKernel {
        match &self.weights {
            LinearWeights::F32(_) => ProductKernel::F32,
            LinearWeights::Bf16(packed) if packed.amx.is_some() => ProductKernel::Amx,
            LinearWeights::Bf16(_) => ProductKernel::Avx512Bf16,
        }
    }
}

/// The kernel a linear layer's products run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProductKernel {
    Amx,
    Avx512Bf16,
    F32,
}

impl ProductKernel {
    pub fn name(self) -> &'static str {
        match self {
            ProductKernel::Amx => "amx",
            ProductKernel::Avx512Bf16 => "avx512-bf16",
            ProductKernel::F32 => "f32",
        }
    }
}

/// bf16 pairs along k, in groups of `NB` panels of 16 output columns; the
/// bias padded to whole groups.
fn pack_bf16(w: &[f32], n: usize, k: usize, bias: &[f32], cpu: Avx512Bf16) -> PackedBf16 {
    let kp = k.div_ceil(2);
    let groups = n.div_ceil(LANES * NB);
    let mut data = vec![0u32; groups * kp * NB * LANES];
    for col in 0..n {
        let (panel, lane) = (col / LANES, col % LANES);
        let (g, j) = (panel / NB, panel % NB);
        let row = &w[col * k..(col + 1) * k];
        for q in 0..kp {
            let lo = bf16_bits(row[2 * q]);
            let hi = if 2 * q + 1 < k {
                bf16_bits(row[2 * q + 1])
            } else {
                0
            };
            data[((g * kp + q) * NB + j) * LANES + lane] = lo | (hi << 16);
        }
    }
    let mut padded_bias = bias.to_vec();
    padded_bias.resize(groups * NB * LANES, 0.0);
    PackedBf16 {
        kp,
        groups,
        data,
        bias: padded_bias,
        cpu,
        amx: PackedBf16::amx_for(kp),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                y[r * n + c] = b[c] + (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum::<f32>();
            }
        }
        y
    }

    pub(crate) fn numbers(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32
                    / 1000.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn linear_layers_match_a_plain_product_at_odd_sizes() {
        // Sizes that are not multiples of the kernel's blocks, odd k included.
        // (40, 70, 96): three 16-row tile blocks where AMX runs.
        for (m, n, k) in [(1, 5, 3), (7, 70, 33), (13, 130, 64), (40, 70, 96)] {
            let x = numbers(m * k, 1);
            let w = numbers(n * k, 2);
            let b = numbers(n, 3);
            let want = reference(&x, &w, &b, m, n, k);
            let f32_out = Linear::new(w.clone(), n, k, b.clone(), Precision::F32)
                .unwrap()
                .forward(&x, m);
            for (a, e) in f32_out.iter().zip(&want) {
                assert!((a - e).abs() < 1e-4, "f32 {m}x{n}x{k}");
            }
            match Linear::new(w, n, k, b, Precision::Bf16) {
                Ok(linear) => {
                    let out = linear.forward(&x, m);
                    for (a, e) in out.iter().zip(&want) {
                        // bf16 keeps 8 bits of mantissa: allow for k products of that error.
                        assert!(
                            (a - e).abs() < 0.02 * (k as f32).sqrt(),
                            "bf16 {m}x{n}x{k}: {a} vs {e}"
                        );
                    }
                }
                Err(MawqifError::Bf16Unsupported) => {
                    crate::encode::fast::skip_without_bf16("bf16 linear layers")
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn amx_tiles_and_the_avx512_kernel_give_the_same_products() {
        let Some(cpu) = Avx512Bf16::detect() else {
            return crate::encode::fast::skip_without_bf16("AMX against AVX-512 BF16");
        };
        // Several 16-row blocks with a partial one and a partial column
        // group, k of 6 tiles in one slice; then whole column groups with
        // k in three slices, so that blocks accumulate in the output
        // between slices. The two kernels differ only in summation order.
        for (m, n, k) in [(45, 200, 192), (50, 128, 640)] {
            let x = numbers(m * k, 4);
            let w = numbers(n * k, 5);
            let b = numbers(n, 6);
            let mut packed = pack_bf16(&w, n, k, &b, cpu);
            if packed.amx.is_none() {
                return crate::encode::fast::skip_without_amx("AMX against AVX-512 BF16");
            }
            // Output and scratch arrive dirty, as they do when the encoder
            // reuses them: every value must be overwritten, padding rows of
            // the scratch included.
            let mut scratch = vec![u32::MAX; 3 * m * k];
            let mut on_tiles = vec![f32::NAN; m * n];
            kernels::matmul_bf16(&packed, &x, &mut on_tiles, m, n, k, &mut scratch, None);
            packed.amx = None;
            let mut on_vectors = vec![f32::NAN; m * n];
            kernels::matmul_bf16(&packed, &x, &mut on_vectors, m, n, k, &mut scratch, None);
            let want = reference(&x, &w, &b, m, n, k);
            for ((t, v), e) in on_tiles.iter().zip(&on_vectors).zip(&want) {
                assert!(
                    (t - v).abs() < 1e-3,
                    "{m}x{n}x{k}: tiles {t} vs vectors {v}"
                );
                assert!(
                    (t - e).abs() < 0.02 * (k as f32).sqrt(),
                    "{m}x{n}x{k}: tiles {t} vs f32 {e}"
                );
            }
        }
    }

    #[test]
    fn each_layer_reports_the_kernel_it_runs_on() {
        let layer =
            |k: usize, precision| Linear::new(vec![0.5; 32 * k], 32, k, vec![0.0; 32], precision);
        assert_eq!(
            layer(384, Precision::F32).unwrap().kernel(),
            ProductKernel::F32
        );
        let (Ok(whole_tiles), Ok(part_tile)) =
            (layer(384, Precision::Bf16), layer(40, Precision::Bf16))
        else {
            return crate::encode::fast::skip_without_bf16("kernel names");
        };
        // k = 40 is 20 pairs, not whole 16-pair tiles: never AMX.
        assert_eq!(part_tile.kernel(), ProductKernel::Avx512Bf16);
        let tiles = if crate::encode::fast::amx_supported() {
            ProductKernel::Amx
        } else {
            ProductKernel::Avx512Bf16
        };
        assert_eq!(whole_tiles.kernel(), tiles);
    }

    #[test]
    fn a_bf16_layer_cannot_be_built_without_the_instructions() {
        let built = Linear::new(vec![1.0; 4], 2, 2, vec![0.0; 2], Precision::Bf16);
        assert_eq!(built.is_ok(), Avx512Bf16::detect().is_some());
    }

    #[test]
    fn wrong_shapes_are_an_error() {
        assert!(matches!(
            Linear::new(vec![1.0; 5], 2, 2, vec![0.0; 2], Precision::F32),
            Err(MawqifError::ShapeMismatch(_))
        ));
    }
}
