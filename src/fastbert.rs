//! Stage 4, fast path: a BERT encoder forward written for CPU inference.
//!
//! Contract: [`FastBert::pooled`] maps a batch of token-id sequences to one
//! pooled vector each, computing the same function as candle's `BertModel`
//! followed by mean or CLS pooling (tested against it: to float rounding in
//! f32, and to a cosine bound in bf16).
//!
//! Why it is faster than the candle path:
//! - sentences are packed end to end with no padding: the linear layers see
//!   only real tokens, and attention runs per sentence;
//! - Q, K and V are one fused matrix product;
//! - with [`Precision::Bf16`] the linear layers run on an AVX-512 BF16 kernel
//!   (`vdpbf16ps`, f32 accumulation) over weights packed once at load;
//!   otherwise on f32 `gemm`;
//! - the word-embedding table, the largest tensor by far (250k × 384 for
//!   e5), is kept in f16 and read from disk straight into that form.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};
use half::f16;
use rayon::prelude::*;

use crate::error::{MawqifError, Result};
use crate::model_dir::Pooling;

/// Number format of the linear layers' inputs and weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 everywhere (the reference).
    F32,
    /// bf16 inputs and weights in the matrix products, f32 accumulation and
    /// f32 everywhere else. Needs AVX-512 BF16.
    Bf16,
}

impl Precision {
    /// bf16 where the CPU has AVX-512 BF16, else f32.
    pub fn best_available() -> Self {
        if bf16_supported() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Does this CPU have the AVX-512 BF16 dot-product instruction?
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn to_vec(t: Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Rows 6 × columns 64 per kernel step: 24 accumulators + 4 B vectors + 1
/// broadcast fit the 32 AVX-512 registers.
const MR: usize = 6;
const NB: usize = 4;
const LANES: usize = 16;

/// Weights of a linear layer `y = x · Wᵀ + b`, `W` being `[n, k]`.
enum LinearWeights {
    F32(Vec<f32>),
    /// bf16 pairs along k, in groups of `NB` panels of 16 output columns:
    /// `data[((group * kp + pair) * NB + panel) * 16 + lane]`.
    Bf16 {
        kp: usize,
        groups: usize,
        data: Vec<u32>,
    },
}

struct Linear {
    n: usize,
    k: usize,
    bias: Vec<f32>,
    weights: LinearWeights,
}

/// f32 → bf16 bits, rounding to nearest even (as PyTorch and oneDNN do).
#[inline(always)]
fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1))) >> 16;
    // A select, not a branch, so that loops over it vectorize.
    if x.is_nan() {
        0x7fc0
    } else {
        rounded
    }
}

impl Linear {
    fn new(w: Vec<f32>, n: usize, k: usize, bias: Vec<f32>, precision: Precision) -> Self {
        let weights = match precision {
            Precision::F32 => LinearWeights::F32(w),
            Precision::Bf16 => {
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
                LinearWeights::Bf16 { kp, groups, data }
            }
        };
        Self {
            n,
            k,
            bias,
            weights,
        }
    }

    fn load(vb: &VarBuilder, n: usize, k: usize, precision: Precision) -> Result<Self> {
        let w = to_vec(vb.get((n, k), "weight")?)?;
        let b = to_vec(vb.get(n, "bias")?)?;
        Ok(Self::new(w, n, k, b, precision))
    }

    /// Stack the rows of several layers with the same input: one product
    /// instead of three for Q, K and V.
    fn load_fused(vbs: &[VarBuilder], n: usize, k: usize, precision: Precision) -> Result<Self> {
        let mut w = Vec::with_capacity(vbs.len() * n * k);
        let mut b = Vec::with_capacity(vbs.len() * n);
        for vb in vbs {
            w.extend(to_vec(vb.get((n, k), "weight")?)?);
            b.extend(to_vec(vb.get(n, "bias")?)?);
        }
        Ok(Self::new(w, vbs.len() * n, k, b, precision))
    }

    /// `x` is `[m, k]`; returns `[m, n]`.
    fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * self.n];
        match &self.weights {
            LinearWeights::F32(w) => self.forward_f32(w, x, m, &mut y),
            LinearWeights::Bf16 { kp, groups, data } => {
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: Bf16 weights are only built when the CPU has
                    // avx512f + avx512bf16 (see FastBert::load).
                    unsafe { self.forward_bf16(data, *kp, *groups, x, m, &mut y) }
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = (kp, groups, data);
                    unreachable!("bf16 weights exist only on x86_64")
                }
            }
        }
        y
    }

    fn forward_f32(&self, w: &[f32], x: &[f32], m: usize, y: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        for row in y.chunks_exact_mut(n) {
            row.copy_from_slice(&self.bias);
        }
        let threads = rayon::current_num_threads();
        let parallelism = if threads > 1 && m * n * k > 1 << 18 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: the strides describe x [m,k] and y [m,n] row-major and
        // Wᵀ read from w [n,k] row-major; every slice is exactly that long.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                y.as_mut_ptr(),
                1,
                n as isize,
                true,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism,
            )
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn forward_bf16(
        &self,
        packed: &[u32],
        kp: usize,
        groups: usize,
        x: &[f32],
        m: usize,
        y: &mut [f32],
    ) {
        let (n, k) = (self.n, self.k);
        let blocks = m.div_ceil(MR);
        // Activations as bf16 pairs, rows padded to whole kernel blocks.
        let mut a = vec![0u32; blocks * MR * kp];
        a.par_chunks_mut(kp)
            .zip(x.par_chunks(k))
            .for_each(|(dst, src)| {
                for (d, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    *d = bf16_bits(pair[0]) | (bf16_bits(pair[1]) << 16);
                }
                if !k.is_multiple_of(2) {
                    dst[kp - 1] = bf16_bits(src[k - 1]);
                }
            });
        // Tasks: column groups × runs of row blocks, so that small batches
        // still spread over all threads.
        // 16 blocks = 96 rows of A per task: with k up to 1536 that is at
        // most 288 KiB, which stays in L2 while the task's B slices pass.
        let threads = rayon::current_num_threads().max(1);
        let blocks_per_chunk = blocks
            .div_ceil((threads * 2).div_ceil(groups).max(1))
            .clamp(1, 16);
        let row_chunks = blocks.div_ceil(blocks_per_chunk);
        let out = SyncPtr(y.as_mut_ptr());
        let bias = &self.bias;
        (0..groups * row_chunks).into_par_iter().for_each(|task| {
            let (g, chunk) = (task / row_chunks, task % row_chunks);
            let b = &packed[g * kp * NB * LANES..(g + 1) * kp * NB * LANES];
            let first = chunk * blocks_per_chunk;
            let last = ((chunk + 1) * blocks_per_chunk).min(blocks);
            let col0 = g * NB * LANES;
            let cols = n.saturating_sub(col0).min(NB * LANES);
            let masks: [u16; NB] = std::array::from_fn(|j| {
                let valid = cols.saturating_sub(j * LANES).min(LANES);
                ((1u32 << valid) - 1) as u16
            });
            // The product one slice of k at a time: a slice of B (KC pairs ×
            // 64 columns = 16 KiB) stays in L1 while every row block of this
            // task passes over it. The first slice starts from the bias.
            let mut q0 = 0;
            while q0 < kp {
                let q1 = (q0 + KC).min(kp);
                for block in first..last {
                    let rows = m.saturating_sub(block * MR).min(MR);
                    // SAFETY: the caller's CPU check covers this kernel; the
                    // A block, the B slice, the bias of this column group and
                    // the `rows` × `cols` C tile at (block·MR, col0) are in
                    // bounds (see bf16_tile).
                    unsafe {
                        bf16_tile(
                            a.as_ptr().add(block * MR * kp),
                            kp,
                            b.as_ptr(),
                            q0,
                            q1,
                            (q0 == 0).then(|| bias.as_ptr().add(col0)),
                            out.at(block * MR * n + col0),
                            n,
                            rows,
                            &masks,
                        )
                    };
                }
                q0 = q1;
            }
        });
    }
}

fn avx512_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One query row of attention: `acc = softmax(q·Kᵀ·scale) · V`.
/// `kt` is Kᵀ `[d][lp]` (keys zero-padded to `lp`), `v` the first value
/// row with rows `stride` apart. `simd` (AVX-512F present, `d` a multiple
/// of 16 up to 128) picks the vector kernels for the two products.
#[allow(clippy::too_many_arguments)]
fn attend_row(
    simd: bool,
    q: &[f32],
    kt: &[f32],
    lp: usize,
    len: usize,
    scale: f32,
    v: &[f32],
    stride: usize,
    scores: &mut [f32],
    acc: &mut [f32],
) {
    let d = q.len();
    #[cfg(target_arch = "x86_64")]
    let vector = simd;
    #[cfg(not(target_arch = "x86_64"))]
    let vector = {
        let _ = simd;
        false
    };
    if vector {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd` is only set when avx512f was detected; kt is d × lp
        // and scores holds lp values.
        unsafe {
            scores_avx512(q, kt, lp, scores)
        };
    } else {
        scores.iter_mut().for_each(|s| *s = 0.0);
        for (c, &qc) in q.iter().enumerate() {
            for (s, &kv) in scores.iter_mut().zip(&kt[c * lp..c * lp + len]) {
                *s += qc * kv;
            }
        }
    }
    let scores = &mut scores[..len];
    let max = max_of(scores) * scale;
    scores.iter_mut().for_each(|s| *s = exp(*s * scale - max));
    let norm = 1.0 / sum(scores);
    scores.iter_mut().for_each(|s| *s *= norm);
    if vector {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; v holds `len` rows of d values, `stride` apart.
        unsafe {
            weighted_rows_avx512(scores, v, stride, acc)
        };
    } else {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (j, p) in scores.iter().enumerate() {
            for (a, vv) in acc.iter_mut().zip(&v[j * stride..j * stride + d]) {
                *a += p * vv;
            }
        }
    }
}

/// `scores[j] = q · K[j]` for all `lp` (padded) keys, 64 keys per pass with
/// the accumulators in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores_avx512(q: &[f32], kt: &[f32], lp: usize, scores: &mut [f32]) {
    use std::arch::x86_64::*;
    let kp = kt.as_ptr();
    let mut jb = 0;
    while jb < lp {
        let width = ((lp - jb) / LANES).min(4);
        let mut s = [_mm512_setzero_ps(); 4];
        for (c, &qc) in q.iter().enumerate() {
            let bq = _mm512_set1_ps(qc);
            let row = kp.add(c * lp + jb);
            for (t, st) in s.iter_mut().enumerate().take(width) {
                *st = _mm512_fmadd_ps(bq, _mm512_loadu_ps(row.add(t * LANES)), *st);
            }
        }
        for (t, st) in s.iter().enumerate().take(width) {
            _mm512_storeu_ps(scores.as_mut_ptr().add(jb + t * LANES), *st);
        }
        jb += width * LANES;
    }
}

/// `acc = Σ_j p[j] · V[j]`, `acc.len()` a multiple of 16 up to 128.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weighted_rows_avx512(p: &[f32], v: &[f32], stride: usize, acc: &mut [f32]) {
    use std::arch::x86_64::*;
    let vectors = acc.len() / LANES;
    let mut out = [_mm512_setzero_ps(); 8];
    let vp = v.as_ptr();
    for (j, &pj) in p.iter().enumerate() {
        let w = _mm512_set1_ps(pj);
        let row = vp.add(j * stride);
        for (t, o) in out.iter_mut().enumerate().take(vectors) {
            *o = _mm512_fmadd_ps(w, _mm512_loadu_ps(row.add(t * LANES)), *o);
        }
    }
    for (t, o) in out.iter().enumerate().take(vectors) {
        _mm512_storeu_ps(acc.as_mut_ptr().add(t * LANES), *o);
    }
}

/// Pairs of k per slice of B that the bf16 kernel keeps in L1.
const KC: usize = 64;

struct SyncPtr(*mut f32);

impl SyncPtr {
    /// Through a method, so closures capture the wrapper, not the raw field.
    fn at(&self, index: usize) -> *mut f32 {
        self.0.wrapping_add(index)
    }
}
// SAFETY: tasks write disjoint elements through the pointer.
unsafe impl Sync for SyncPtr {}
unsafe impl Send for SyncPtr {}

/// `C[rows × cols] += A_block[:, q0..q1] · B_group[q0..q1, :]` for one
/// block of `MR` rows and `NB` panels of 16 columns; with `bias`, C is
/// overwritten with `bias + product` instead. `a` is the block's first row
/// (rows `kp` pairs apart, padded to `MR` rows), `b` the group's packed
/// panels, `bias` the group's first bias value, `c` the tile's first
/// element (rows `ldc` apart); only the first `rows` rows and the columns
/// set in `masks` are read or written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn bf16_tile(
    a: *const u32,
    kp: usize,
    b: *const u32,
    q0: usize,
    q1: usize,
    bias: Option<*const f32>,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    masks: &[u16; NB],
) {
    use std::arch::x86_64::*;
    let init: [__m512; NB] = match bias {
        Some(bp) => std::array::from_fn(|j| _mm512_maskz_loadu_ps(masks[j], bp.add(j * LANES))),
        None => [_mm512_setzero_ps(); NB],
    };
    let mut acc = [init; MR];
    for q in q0..q1 {
        let bv: [__m512bh; NB] = std::array::from_fn(|j| {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                b.add((q * NB + j) * LANES) as *const _,
            ))
        });
        for (i, acc_row) in acc.iter_mut().enumerate() {
            let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                *a.add(i * kp + q) as i32,
            ));
            for j in 0..NB {
                acc_row[j] = _mm512_dpbf16_ps(acc_row[j], av, bv[j]);
            }
        }
    }
    for (i, acc_row) in acc.iter().enumerate().take(rows) {
        for j in 0..NB {
            if masks[j] == 0 {
                continue;
            }
            let p = c.add(i * ldc + j * LANES);
            let value = if bias.is_some() {
                acc_row[j]
            } else {
                _mm512_add_ps(_mm512_maskz_loadu_ps(masks[j], p), acc_row[j])
            };
            _mm512_mask_storeu_ps(p, masks[j], value);
        }
    }
}

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, h: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: to_vec(vb.get(h, "weight")?)?,
            bias: to_vec(vb.get(h, "bias")?)?,
            eps: eps as f32,
        })
    }

    /// `x = LayerNorm(x + residual)`, row by row.
    fn apply_residual(&self, x: &mut [f32], residual: &[f32]) {
        let h = self.weight.len();
        x.par_chunks_mut(h)
            .zip(residual.par_chunks(h))
            .for_each(|(row, res)| {
                for (v, r) in row.iter_mut().zip(res) {
                    *v += r;
                }
                self.normalize_row(row);
            });
    }

    fn normalize_row(&self, row: &mut [f32]) {
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

/// erf as a rational function of x² on [-4, 4] (erf is ±1 to f32
/// precision beyond): only multiplies, adds and one divide, so loops over
/// it vectorize. The coefficients are the widely used ones of Eigen's
/// `generic_fast_erf_float`; error is a few ulp.
#[inline(always)]
fn erf(x: f32) -> f32 {
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
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Dot product with 16 independent accumulators, so it vectorizes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
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
fn max_of(a: &[f32]) -> f32 {
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

fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        for l in 0..16 {
            acc[l] += a[c * 16 + l];
        }
    }
    acc.iter().sum::<f32>() + a[chunks * 16..].iter().sum::<f32>()
}

fn activate(x: &mut [f32], act: HiddenAct) {
    x.par_chunks_mut(4096).for_each(|chunk| match act {
        HiddenAct::Gelu => {
            for v in chunk {
                *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
        HiddenAct::GeluApproximate => {
            for v in chunk {
                let inner = 0.797_884_6 * (*v + 0.044_715 * *v * *v * *v);
                *v = 0.5 * *v * (1.0 + inner.tanh());
            }
        }
        HiddenAct::Relu => {
            for v in chunk {
                *v = v.max(0.0);
            }
        }
    });
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// The encoder, loaded for inference.
pub struct FastBert {
    hidden: usize,
    heads: usize,
    act: HiddenAct,
    vocab: usize,
    max_positions: usize,
    /// `[vocab, hidden]` in f16: half the memory of f32, and e5's table came
    /// from 4-bit blocks with f16 scales, so little is lost (see tests).
    word_embeddings: Vec<f16>,
    position_embeddings: Vec<f32>,
    token_type0: Vec<f32>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    precision: Precision,
}

impl FastBert {
    /// Load from a `VarBuilder` (bare or `bert.`-prefixed names).
    /// `word_embeddings`, when given, is the f16 table read elsewhere
    /// (streamed from safetensors, so it is never held in f32).
    pub fn load(
        vb: VarBuilder,
        config: &BertConfig,
        word_embeddings: Option<Vec<f16>>,
        precision: Precision,
    ) -> Result<Self> {
        if precision == Precision::Bf16 && !bf16_supported() {
            return Err(MawqifError::Invalid(
                "bf16 precision needs a CPU with AVX-512 BF16; use f32".into(),
            ));
        }
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let (h, v, p) = (
            config.hidden_size,
            config.vocab_size,
            config.max_position_embeddings,
        );
        let emb = vb.pp("embeddings");
        let word_embeddings = match word_embeddings {
            Some(w) if w.len() == v * h => w,
            Some(w) => {
                return Err(MawqifError::Invalid(format!(
                    "word embedding table has {} values, config.json wants {v} × {h}",
                    w.len()
                )))
            }
            None => to_vec(emb.get((v, h), "word_embeddings.weight")?)?
                .into_iter()
                .map(f16::from_f32)
                .collect(),
        };
        let position_embeddings = to_vec(emb.get((p, h), "position_embeddings.weight")?)?;
        let token_types = to_vec(emb.get(
            (config.type_vocab_size.max(1), h),
            "token_type_embeddings.weight",
        )?)?;
        let embed_norm = LayerNorm::load(&emb.pp("LayerNorm"), h, config.layer_norm_eps)?;
        let i = config.intermediate_size;
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let lv = vb.pp(format!("encoder.layer.{l}"));
                let att = lv.pp("attention");
                Ok(Layer {
                    qkv: Linear::load_fused(
                        &[
                            att.pp("self.query"),
                            att.pp("self.key"),
                            att.pp("self.value"),
                        ],
                        h,
                        h,
                        precision,
                    )?,
                    attn_out: Linear::load(&att.pp("output.dense"), h, h, precision)?,
                    attn_norm: LayerNorm::load(
                        &att.pp("output.LayerNorm"),
                        h,
                        config.layer_norm_eps,
                    )?,
                    intermediate: Linear::load(&lv.pp("intermediate.dense"), i, h, precision)?,
                    output: Linear::load(&lv.pp("output.dense"), h, i, precision)?,
                    out_norm: LayerNorm::load(
                        &lv.pp("output.LayerNorm"),
                        h,
                        config.layer_norm_eps,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            hidden: h,
            heads: config.num_attention_heads,
            act: config.hidden_act,
            vocab: v,
            max_positions: p,
            word_embeddings,
            position_embeddings,
            token_type0: token_types[..h].to_vec(),
            embed_norm,
            layers,
            precision,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Token states of the packed batch: `[Σ len, hidden]`.
    fn states(&self, batch: &[&[u32]]) -> Result<Vec<f32>> {
        let h = self.hidden;
        let total: usize = batch.iter().map(|s| s.len()).sum();
        let mut offsets = Vec::with_capacity(batch.len());
        let mut x = vec![0f32; total * h];
        let mut at = 0;
        for s in batch {
            if s.len() > self.max_positions {
                return Err(MawqifError::Invalid(format!(
                    "a sequence of {} tokens exceeds the model's {} positions",
                    s.len(),
                    self.max_positions
                )));
            }
            for (pos, &id) in s.iter().enumerate() {
                let id = id as usize;
                if id >= self.vocab {
                    return Err(MawqifError::Invalid(format!(
                        "token id {id} is outside the vocabulary of {}",
                        self.vocab
                    )));
                }
                let row = &mut x[(at + pos) * h..(at + pos + 1) * h];
                let word = &self.word_embeddings[id * h..(id + 1) * h];
                let position = &self.position_embeddings[pos * h..(pos + 1) * h];
                for c in 0..h {
                    row[c] = word[c].to_f32() + position[c] + self.token_type0[c];
                }
            }
            offsets.push((at, s.len()));
            at += s.len();
        }
        x.par_chunks_mut(h)
            .for_each(|row| self.embed_norm.normalize_row(row));
        for layer in &self.layers {
            x = self.layer_forward(layer, x, total, &offsets);
        }
        Ok(x)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        x: Vec<f32>,
        total: usize,
        offsets: &[(usize, usize)],
    ) -> Vec<f32> {
        let h = self.hidden;
        let t = prof::start();
        let qkv = layer.qkv.forward(&x, total);
        prof::add(0, t);
        let t = prof::start();
        let context = self.attention(&qkv, total, offsets);
        prof::add(1, t);
        let t = prof::start();
        let mut attn = layer.attn_out.forward(&context, total);
        prof::add(2, t);
        let t = prof::start();
        layer.attn_norm.apply_residual(&mut attn, &x);
        prof::add(3, t);
        let t = prof::start();
        let mut inter = layer.intermediate.forward(&attn, total);
        prof::add(4, t);
        let t = prof::start();
        activate(&mut inter, self.act);
        prof::add(5, t);
        let t = prof::start();
        let mut out = layer.output.forward(&inter, total);
        prof::add(6, t);
        let t = prof::start();
        layer.out_norm.apply_residual(&mut out, &attn);
        prof::add(7, t);
        debug_assert_eq!(out.len(), total * h);
        out
    }

    /// Softmax attention of each sentence over itself, per head.
    fn attention(&self, qkv: &[f32], total: usize, offsets: &[(usize, usize)]) -> Vec<f32> {
        let h = self.hidden;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut context = vec![0f32; total * h];
        let out = SyncPtr(context.as_mut_ptr());
        let stride = 3 * h;
        let tasks: Vec<(usize, usize, usize)> = offsets
            .iter()
            .flat_map(|&(start, len)| (0..self.heads).map(move |head| (start, len, head)))
            .collect();
        let simd = avx512_supported() && d.is_multiple_of(LANES) && d <= 8 * LANES;
        tasks.par_iter().for_each(|&(start, len, head)| {
            // Kᵀ of this head, [d][len padded to 16]: score rows then run
            // across keys, 16 at a time, with no horizontal sums.
            let lp = len.div_ceil(LANES) * LANES;
            let mut kt = vec![0f32; d * lp];
            for j in 0..len {
                let k = &qkv[(start + j) * stride + h + head * d..][..d];
                for (c, &kv) in k.iter().enumerate() {
                    kt[c * lp + j] = kv;
                }
            }
            let mut scores = vec![0f32; lp];
            let mut acc = vec![0f32; d];
            let v_rows = &qkv[start * stride + 2 * h + head * d..];
            for i in 0..len {
                let q = &qkv[(start + i) * stride + head * d..][..d];
                attend_row(
                    simd,
                    q,
                    &kt,
                    lp,
                    len,
                    scale,
                    v_rows,
                    stride,
                    &mut scores,
                    &mut acc,
                );
                for (c, a) in acc.iter().enumerate() {
                    // SAFETY: row start+i, columns of this head: written by
                    // this task alone, and inside context [total, h].
                    unsafe { *out.at((start + i) * h + head * d + c) = *a };
                }
            }
        });
        context
    }

    /// One pooled vector per sequence (empty sequences give zeros).
    pub fn pooled(
        &self,
        batch: &[&[u32]],
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let h = self.hidden;
        let states = self.states(batch)?;
        let mut at = 0;
        let mut out = Vec::with_capacity(batch.len());
        for s in batch {
            let len = s.len();
            let mut v = vec![0f32; h];
            if len > 0 {
                match pooling {
                    Pooling::Cls => v.copy_from_slice(&states[at * h..(at + 1) * h]),
                    Pooling::Mean => {
                        for row in states[at * h..(at + len) * h].chunks_exact(h) {
                            for (a, b) in v.iter_mut().zip(row) {
                                *a += b;
                            }
                        }
                        v.iter_mut().for_each(|a| *a /= len as f32);
                    }
                }
            }
            if normalize {
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|a| *a /= norm);
            }
            out.push(v);
            at += len;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to even.
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.0), 0xc000);
    }

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
    fn vector_and_scalar_attention_rows_agree() {
        if !avx512_supported() {
            return;
        }
        let (d, len, stride): (usize, usize, usize) = (32, 37, 3 * 32);
        let lp = len.div_ceil(LANES) * LANES;
        let q = numbers(d, 5);
        let mut kt = numbers(d * lp, 6);
        for c in 0..d {
            kt[c * lp + len..(c + 1) * lp]
                .iter_mut()
                .for_each(|x| *x = 0.0);
        }
        let v = numbers(len * stride, 7);
        let run = |simd: bool| {
            let (mut scores, mut acc) = (vec![0f32; lp], vec![0f32; d]);
            attend_row(
                simd,
                &q,
                &kt,
                lp,
                len,
                0.17,
                &v,
                stride,
                &mut scores,
                &mut acc,
            );
            acc
        };
        let (fast, plain) = (run(true), run(false));
        for (a, b) in fast.iter().zip(&plain) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // The comparison is not between two rows of zeros.
        assert!(plain.iter().any(|x| x.abs() > 1e-3));
    }

    #[test]
    fn fast_exp_is_accurate() {
        for i in -800..=800 {
            let x = i as f32 / 10.0;
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            assert!(rel < 1e-6, "exp({x}): {} vs {}", exp(x), x.exp());
        }
    }

    fn reference(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                y[r * n + c] = b[c] + (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum::<f32>();
            }
        }
        y
    }

    fn numbers(len: usize, seed: u32) -> Vec<f32> {
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
        for (m, n, k) in [(1, 5, 3), (7, 70, 33), (13, 130, 64)] {
            let x = numbers(m * k, 1);
            let w = numbers(n * k, 2);
            let b = numbers(n, 3);
            let want = reference(&x, &w, &b, m, n, k);
            let f32_out = Linear::new(w.clone(), n, k, b.clone(), Precision::F32).forward(&x, m);
            for (a, e) in f32_out.iter().zip(&want) {
                assert!((a - e).abs() < 1e-4, "f32 {m}x{n}x{k}");
            }
            if bf16_supported() {
                let out = Linear::new(w, n, k, b, Precision::Bf16).forward(&x, m);
                for (a, e) in out.iter().zip(&want) {
                    // bf16 keeps 8 bits of mantissa: allow for k products of that error.
                    assert!(
                        (a - e).abs() < 0.02 * (k as f32).sqrt(),
                        "bf16 {m}x{n}x{k}: {a} vs {e}"
                    );
                }
            }
        }
    }
}

/// Wall time per layer stage, summed over the process, for `mawqif bench`
/// with `MAWQIF_PROFILE` set. Off unless [`prof::enable`] is called: then
/// each stage costs two clock reads.
pub mod prof {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;

    static ON: AtomicBool = AtomicBool::new(false);
    static T: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
    const NAMES: [&str; 8] = [
        "qkv",
        "attention",
        "attn_out",
        "ln1",
        "inter",
        "gelu",
        "output",
        "ln2",
    ];

    pub fn enable() {
        ON.store(true, Ordering::Relaxed);
    }

    pub(crate) fn start() -> Option<Instant> {
        ON.load(Ordering::Relaxed).then(Instant::now)
    }

    pub(crate) fn add(stage: usize, since: Option<Instant>) {
        if let Some(t) = since {
            T[stage].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Seconds per stage, to stderr.
    pub fn report() {
        for (name, t) in NAMES.iter().zip(&T) {
            eprintln!("{name:10} {:8.3} s", t.load(Ordering::Relaxed) as f64 / 1e9);
        }
    }
}

/// Microbenchmarks, run by hand:
/// `cargo test --release --lib kernel_peak -- --ignored --nocapture`.
#[cfg(test)]
mod kernel_peak {
    #[test]
    #[ignore]
    fn kernel_peak() {
        use super::*;
        let kp = 64;
        let a = vec![0x3f803f80u32; MR * kp];
        let b = vec![0x3f803f80u32; kp * NB * LANES];
        let mut c = vec![0f32; MR * NB * LANES];
        let reps = 200_000;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            unsafe {
                bf16_tile(
                    a.as_ptr(),
                    kp,
                    b.as_ptr(),
                    0,
                    kp,
                    None,
                    c.as_mut_ptr(),
                    NB * LANES,
                    MR,
                    &[0xffff; NB],
                )
            };
            std::hint::black_box(&c);
        }
        let s = t.elapsed().as_secs_f64();
        let flops = reps as f64 * (MR * NB * LANES * kp * 2 * 2) as f64;
        eprintln!("single core kernel: {:.1} GFLOP/s", flops / s / 1e9);
    }
}

#[cfg(test)]
mod gemm_speed {
    #[test]
    #[ignore]
    fn gemm_speed() {
        use super::*;
        for (m, n, k) in [(1070, 1152, 384), (1070, 1536, 384), (1070, 384, 1536)] {
            let x = vec![0.5f32; m * k];
            let w = vec![0.25f32; n * k];
            let lin = Linear::new(w, n, k, vec![0.0; n], Precision::Bf16);
            let reps = 20;
            lin.forward(&x, m);
            let t = std::time::Instant::now();
            for _ in 0..reps {
                std::hint::black_box(lin.forward(&x, m));
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            eprintln!(
                "{m}x{n}x{k}: {:.2} ms, {:.1} GFLOP/s, threads {}",
                s * 1e3,
                (2 * m * n * k) as f64 / s / 1e9,
                rayon::current_num_threads()
            );
        }
    }
}
