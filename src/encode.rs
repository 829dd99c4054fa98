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
    /// Load the weights of `dir` (safetensors read tensor by tensor, or a PyTorch zip).
    /// `override_file` (safetensors) replaces base tensors of the same name:
    /// that is how fine-tuned layers are layered over a base model.
    pub fn load(
        dir: &ModelDir,
        pad_id: u32,
        override_file: Option<&std::path::Path>,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let weights = dir.weights.path();
        let vb = weights_builder(dir, override_file, &device)?;
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

/// A `VarBuilder` over the model's weights, with `override_file` layered on top.
pub fn weights_builder(
    dir: &ModelDir,
    override_file: Option<&std::path::Path>,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    match (&dir.weights, override_file) {
        (WeightsFile::Safetensors(p), o) => {
            let mut files = vec![p.as_path()];
            files.extend(o);
            let backend = crate::weights::SafetensorsFiles::open(&files)?;
            Ok(VarBuilder::from_backend(
                Box::new(backend),
                DType::F32,
                device.clone(),
            ))
        }
        (WeightsFile::PytorchBin(p), None) => VarBuilder::from_pth(p, DType::F32, device)
            .map_err(|e| MawqifError::malformed(p, e.to_string())),
        (WeightsFile::PytorchBin(p), Some(_)) => Err(MawqifError::malformed(
            p,
            "fine-tuned layers can only be layered over model.safetensors weights",
        )),
    }
}
