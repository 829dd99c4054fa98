//! Softmax self-attention of each sentence over itself, per head, on packed
//! (unpadded) Q, K and V rows.

use super::kernels::{self, Avx512F, LANES};
use super::math::{exp, max_of, sum};

/// Context rows `[total, hidden]` from fused `qkv` rows `[total, 3·hidden]`;
/// `offsets` are each sentence's `(first row, length)`.
pub(super) fn attention(
    qkv: &[f32],
    total: usize,
    offsets: &[(usize, usize)],
    hidden: usize,
    heads: usize,
) -> Vec<f32> {
    let h = hidden;
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut context = vec![0f32; total * h];
    let stride = 3 * h;
    let simd = Avx512F::detect().filter(|_| d.is_multiple_of(LANES) && d <= 8 * LANES);
    // One task per sentence × head: the task owns its sentence's rows in
    // this head's columns of `context`.
    kernels::par_blocks(&mut context, h, offsets, d, |sentence, head, mut block| {
        let (start, len) = offsets[sentence];
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
                block.row(i),
            );
        }
    });
    context
}

/// One query row of attention: `acc = softmax(q·Kᵀ·scale) · V`.
/// `kt` is Kᵀ `[d][lp]` (keys zero-padded to `lp`), `v` the first value
/// row with rows `stride` apart. With `simd` (AVX-512F present, `d` a
/// multiple of 16 up to 128) the two products run on vector kernels.
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_row(
    simd: Option<Avx512F>,
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
    match simd {
        Some(cpu) => kernels::scores_avx512(cpu, q, kt, lp, scores),
        None => {
            scores.iter_mut().for_each(|s| *s = 0.0);
            for (c, &qc) in q.iter().enumerate() {
                for (s, &kv) in scores.iter_mut().zip(&kt[c * lp..c * lp + len]) {
                    *s += qc * kv;
                }
            }
        }
    }
    let scores = &mut scores[..len];
    kernels::widest(simd, || softmax(scores, scale));
    match simd {
        Some(cpu) => kernels::weighted_rows_avx512(cpu, scores, v, stride, acc),
        None => {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (j, p) in scores.iter().enumerate() {
                for (a, vv) in acc.iter_mut().zip(&v[j * stride..j * stride + d]) {
                    *a += p * vv;
                }
            }
        }
    }
}

/// `scores = softmax(scores · scale)`, in place. Always inlined, so that
/// it vectorizes as wide as the caller is compiled for.
#[inline(always)]
fn softmax(scores: &mut [f32], scale: f32) {
    let max = max_of(scores) * scale;
    scores.iter_mut().for_each(|s| *s = exp(*s * scale - max));
    let norm = 1.0 / sum(scores);
    scores.iter_mut().for_each(|s| *s *= norm);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::fast::linear::tests::numbers;

    #[test]
    fn vector_and_scalar_attention_rows_agree() {
        let Some(cpu) = Avx512F::detect() else {
            crate::encode::fast::skip_without_bf16("the AVX-512 attention kernels");
            return;
        };
        for (d, len) in [(16usize, 5usize), (32, 37), (64, 16), (128, 70)] {
            let stride = 3 * d;
            let lp = len.div_ceil(LANES) * LANES;
            let q = numbers(d, 5);
            let mut kt = numbers(d * lp, 6);
            for c in 0..d {
                kt[c * lp + len..(c + 1) * lp]
                    .iter_mut()
                    .for_each(|x| *x = 0.0);
            }
            let v = numbers(len * stride, 7);
            let run = |simd: Option<Avx512F>| {
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
            let (fast, plain) = (run(Some(cpu)), run(None));
            for (a, b) in fast.iter().zip(&plain) {
                assert!((a - b).abs() < 1e-5, "d {d}, len {len}: {a} vs {b}");
            }
            // The comparison is not between two rows of zeros.
            assert!(plain.iter().any(|x| x.abs() > 1e-3));
        }
    }
}
