//! Pooling token states into one sentence vector, shared by every engine.

use crate::model::Pooling;

/// One vector per sentence from packed token states: `states` holds the
/// rows of each sentence in turn (`lens[i]` rows of `hidden` values for
/// sentence `i`). Mean pooling sums rows in order and divides by the count;
/// an empty sentence gives zeros. With `normalize`, each vector is scaled to
/// unit length (e5 was trained that way).
pub fn pool(
    states: &[f32],
    hidden: usize,
    lens: &[usize],
    pooling: Pooling,
    normalize: bool,
) -> Vec<Vec<f32>> {
    let h = hidden;
    let mut at = 0;
    let mut out = Vec::with_capacity(lens.len());
    for &len in lens {
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_cls_and_norm() {
        // Two sentences of hidden 2: [[1,2],[3,4]] and [[5,12]].
        let states = [1.0, 2.0, 3.0, 4.0, 5.0, 12.0];
        let mean = pool(&states, 2, &[2, 1], Pooling::Mean, false);
        assert_eq!(mean, vec![vec![2.0, 3.0], vec![5.0, 12.0]]);
        let cls = pool(&states, 2, &[2, 1], Pooling::Cls, false);
        assert_eq!(cls[0], vec![1.0, 2.0]);
        let unit = pool(&states, 2, &[2, 1], Pooling::Mean, true);
        assert!((unit[1][0] - 5.0 / 13.0).abs() < 1e-7);
        assert_eq!(
            pool(&[], 2, &[0], Pooling::Mean, true),
            vec![vec![0.0, 0.0]]
        );
    }
}
