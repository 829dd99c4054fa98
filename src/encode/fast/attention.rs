//! Softmax self-attention of each sentence over itself, per head, on packed
//! (unpadded) Q, K and V rows.

use super::kernels::{self, Avx512F, QueryRow, LANES};
use super::math::{exp, max_of, sum};

/// Context rows `[total, hidden]` into `context` (every value is
/// overwritten) from fused `qkv` rows `[total, 3·hidden]`; `offsets` are
/// each sentence's `(first row, length)`.
pub(super) fn attention(
    qkv: &[f32],
    total: usize,
    offsets: &[(usize, usize)],
    hidden: usize,
    heads: usize,
    context: &mut [f32],
) {
    let h = hidden;
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    assert!(context.len() == total * h && qkv.len() == total * 3 * h);
    let stride = 3 * h;
    let simd = Avx512F::detect().filter(|_| d > 0 && d.is_multiple_of(LANES) && d <= 8 * LANES);
    // One task per sentence × head: the task owns its sentence's rows in
    // this head's columns of `context`.
    kernels::par_blocks(context, h, offsets, d, |sentence, head, mut block| {
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
            let row = QueryRow {
                q: &qkv[(start + i) * stride + head * d..][..d],
                kt: &kt,
                lp,
                len,
                scale,
                v: v_rows,
                stride,
            };
            attend_row(simd, &row, &mut scores, block.row(i));
        }
    });
}

/// One query row of attention: `acc = softmax(q·Kᵀ·scale) · V`. With
/// `simd` (AVX-512F present, `d` a multiple of 16 up to 128) it runs as
/// one fused vector kernel.
pub(super) fn attend_row(
    simd: Option<Avx512F>,
    row: &QueryRow<'_>,
    scores: &mut [f32],
    acc: &mut [f32],
) {
    if let Some(cpu) = simd {
        return kernels::attend_row_avx512(cpu, row, scores, acc);
    }
    let (d, lp, len, stride) = (row.q.len(), row.lp, row.len, row.stride);
    scores.iter_mut().for_each(|s| *s = 0.0);
    for (c, &qc) in row.q.iter().enumerate() {
        for (s, &kv) in scores.iter_mut().zip(&row.kt[c * lp..c * lp + len]) {
            *s += qc * kv;
        }
    }
    let scores = &mut scores[..len];
    softmax(scores, row.scale);
    acc.iter_mut().for_each(|a| *a = 0.0);
    for (j, p) in scores.iter().enumerate() {
        for (a, vv) in acc.iter_mut().zip(&row.v[j * stride..j * stride + d]) {
            *a += p * vv;
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
                let row = QueryRow {
                    q: &q,
                    kt: &kt,
                    lp,
                    len,
                    scale: 0.17,
                    v: &v,
                    stride,
                };
                attend_row(simd, &row, &mut scores, &mut acc);
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
/// Microbenchmark, run by hand:
/// `cargo test --release --lib attention_speed -- --ignored --nocapture`.
#[cfg(test)]
mod attention_speed {
    #[test]
    #[ignore]
    fn attention_speed() {
        use super::*;
        let (h, heads) = (384usize, 12usize);
        // A batch of 32 sentences of 25 to 56 tokens, as the bench's are.
        let lens: Vec<usize> = (0..32).map(|i| 25 + i).collect();
        let mut offsets = vec![];
        let mut at = 0;
        for &l in &lens {
            offsets.push((at, l));
            at += l;
        }
        let qkv = crate::encode::fast::linear::tests::numbers(at * 3 * h, 3);
        let reps = 50;
        let t = std::time::Instant::now();
        let mut context = vec![0f32; at * h];
        for _ in 0..reps {
            attention(&qkv, at, &offsets, h, heads, &mut context);
            std::hint::black_box(&context);
        }
        eprintln!(
            "attention {} rows: {:.3} ms",
            at,
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
    }
}
