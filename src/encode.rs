//! Stage 4: embed tokenized sentences with a BERT encoder (candle).
//!
//! Contract: [`Encoder::embed`] returns one pooled vector (length
//! `hidden_size`) per input, in input order. Inputs are sorted by length and
//! batched internally so that padding stays small; results do not depend on
//! the batch size beyond float rounding.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;

use crate::error::{MawqifError, Result};
use crate::model_dir::{ModelDir, Pooling, WeightsFile};
use crate::tokenize::TokenizedSentence;

pub struct Encoder {
    model: BertModel,
    pooling: Pooling,
    normalize: bool,
    hidden_size: usize,
    pad_id: u32,
    device: Device,
}

impl Encoder {
    /// Load the weights of `dir` (safetensors memory-mapped, or a PyTorch zip).
    /// `override_file` (safetensors) replaces base tensors of the same name:
    /// that is how fine-tuned layers are layered over a base model.
    pub fn load(
        dir: &ModelDir,
        pad_id: u32,
        override_file: Option<&std::path::Path>,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let weights = dir.weights.path();
        if let Some(o) = override_file {
            check_safetensors_header(o)?;
        }
        let vb = match (&dir.weights, override_file) {
            (WeightsFile::Safetensors(p), o) => {
                check_safetensors_header(p)?;
                let mut files = vec![p.as_path()];
                files.extend(o);
                // SAFETY: the files are only read; mawqif never writes into a
                // model or head directory while a model from it is loaded.
                // Later files win for names present in several.
                unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &device) }
            }
            (WeightsFile::PytorchBin(p), None) => VarBuilder::from_pth(p, DType::F32, &device),
            (WeightsFile::PytorchBin(p), Some(_)) => {
                return Err(MawqifError::malformed(
                    p,
                    "fine-tuned layers can only be layered over model.safetensors weights",
                ))
            }
        }
        .map_err(|e| MawqifError::malformed(weights, e.to_string()))?;
        let model = BertModel::load(vb, &dir.config).map_err(|e| {
            MawqifError::malformed(
                weights,
                format!("weights do not match config.json ({e}); is the directory mixed up?"),
            )
        })?;
        Ok(Self {
            model,
            pooling: dir.profile.pooling,
            normalize: dir.profile.normalize,
            hidden_size: dir.config.hidden_size,
            pad_id,
            device,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// Embed all sentences, at most `batch_size` per forward pass.
    /// `on_batch` is told how many sentences each finished batch held.
    pub fn embed(
        &self,
        sentences: &[TokenizedSentence],
        batch_size: usize,
        mut on_batch: impl FnMut(usize),
    ) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..sentences.len()).collect();
        order.sort_by_key(|&i| sentences[i].ids.len());
        let mut out = vec![Vec::new(); sentences.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| sentences[i].ids.as_slice()).collect();
            let vectors = self.embed_batch(&batch)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
            on_batch(chunk.len());
        }
        Ok(out)
    }

    /// One forward pass over a padded batch.
    fn embed_batch(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let max_len = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        if max_len == 0 {
            return Ok(vec![vec![0.0; self.hidden_size]; batch.len()]);
        }
        let mut ids = Vec::with_capacity(batch.len() * max_len);
        let mut mask = Vec::with_capacity(batch.len() * max_len);
        for s in batch {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(self.pad_id, max_len - s.len()));
            mask.extend(std::iter::repeat_n(1u32, s.len()));
            mask.extend(std::iter::repeat_n(0u32, max_len - s.len()));
        }
        let shape = (batch.len(), max_len);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let type_ids = ids.zeros_like()?;
        let states = self.model.forward(&ids, &type_ids, Some(&mask))?;
        let pooled = match self.pooling {
            Pooling::Cls => states.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = states.broadcast_mul(&m)?.sum(1)?;
                let counts = m.sum(1)?.clamp(1e-9, f32::MAX as f64)?;
                summed.broadcast_div(&counts)?
            }
        };
        let pooled = if self.normalize {
            let norm = pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f32::MAX as f64)?;
            pooled.broadcast_div(&norm)?
        } else {
            pooled
        };
        Ok(pooled.to_vec2::<f32>()?)
    }
}

/// A truncated or foreign file fails here with a message naming it, rather
/// than deep inside the loader.
fn check_safetensors_header(path: &std::path::Path) -> Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| MawqifError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| MawqifError::io(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| MawqifError::malformed(path, "shorter than a safetensors header"))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len == 0 || header_len > file_len.saturating_sub(8) || header_len > 100_000_000 {
        return Err(MawqifError::malformed(
            path,
            "not a safetensors file (bad header length); re-download or re-import it",
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| MawqifError::io(path, e))?;
    let header: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
        MawqifError::malformed(path, format!("safetensors header is not JSON: {e}"))
    })?;
    let data_len = file_len - 8 - header_len;
    if let Some(map) = header.as_object() {
        for (name, info) in map {
            if let Some(end) = info
                .get("data_offsets")
                .and_then(|o| o.get(1))
                .and_then(|v| v.as_u64())
            {
                if end > data_len {
                    return Err(MawqifError::malformed(
                        path,
                        format!(
                            "truncated: tensor {name} ends at byte {end} of the data but the file holds {data_len}; re-download or re-import it"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}
