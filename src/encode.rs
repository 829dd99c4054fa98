//! Stage 4: embed tokenized sentences with a BERT encoder.
//!
//! Contract: [`Encoder::embed`] returns one pooled vector (length
//! `hidden_size`) per input, in input order. Inputs are sorted by length and
//! batched internally; results do not depend on the batch size beyond float
//! rounding.
//!
//! Two engines compute the same function: [`Engine::Fast`] (our own CPU
//! forward, [`crate::fastbert`]: no padding, bf16 or f32 matrix products)
//! and [`Engine::Candle`] (candle's `BertModel`, the reference).

use std::sync::RwLock;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;

use crate::error::{MawqifError, Result};
use crate::fastbert::{FastBert, Precision};
use crate::model_dir::{ModelDir, Pooling, WeightsFile};
use crate::tokenize::TokenizedSentence;

/// Which implementation runs the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// mawqif's own forward at the given precision.
    Fast(Precision),
    /// candle-transformers' `BertModel`, f32, padded batches.
    Candle,
}

impl Engine {
    /// Fast, in bf16 where the CPU has AVX-512 BF16, else f32.
    pub fn auto() -> Self {
        Engine::Fast(Precision::best_available())
    }

    /// `auto`, `bf16`, `f32` or `candle`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "auto" => Ok(Self::auto()),
            "bf16" => Ok(Engine::Fast(Precision::Bf16)),
            "f32" => Ok(Engine::Fast(Precision::F32)),
            "candle" => Ok(Engine::Candle),
            other => Err(MawqifError::Invalid(format!(
                "unknown engine `{other}`: use auto, bf16, f32 or candle"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Fast(p) => p.name(),
            Engine::Candle => "candle",
        }
    }
}

static DEFAULT_ENGINE: RwLock<Option<Engine>> = RwLock::new(None);

/// Set the engine that [`Encoder::load`] uses (the CLI's `--engine`).
pub fn set_default_engine(engine: Engine) {
    if let Ok(mut e) = DEFAULT_ENGINE.write() {
        *e = Some(engine);
    }
}

/// The engine set by [`set_default_engine`], else `MAWQIF_ENGINE`, else auto.
pub fn default_engine() -> Engine {
    if let Some(e) = DEFAULT_ENGINE.read().ok().and_then(|e| *e) {
        return e;
    }
    std::env::var("MAWQIF_ENGINE")
        .ok()
        .and_then(|v| Engine::parse(&v).ok())
        .unwrap_or_else(Engine::auto)
}

/// Most tokens in one forward pass of the fast engine (its working memory
/// grows with this; throughput barely does beyond it).
const TOKEN_BUDGET: usize = 8192;

enum Backend {
    Candle(BertModel),
    Fast(FastBert),
}

pub struct Encoder {
    backend: Backend,
    pooling: Pooling,
    normalize: bool,
    hidden_size: usize,
    pad_id: u32,
    device: Device,
}

impl Encoder {
    /// Load the weights of `dir` (safetensors read tensor by tensor, or a
    /// PyTorch zip) with the default engine. `override_file` (safetensors)
    /// replaces base tensors of the same name: that is how fine-tuned layers
    /// are layered over a base model.
    pub fn load(
        dir: &ModelDir,
        pad_id: u32,
        override_file: Option<&std::path::Path>,
    ) -> Result<Self> {
        Self::load_with_engine(dir, pad_id, override_file, default_engine())
    }

    pub fn load_with_engine(
        dir: &ModelDir,
        pad_id: u32,
        override_file: Option<&std::path::Path>,
        engine: Engine,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let weights = dir.weights.path();
        let vb = weights_builder(dir, override_file, &device)?;
        let mismatch = |e: &dyn std::fmt::Display| {
            MawqifError::malformed(
                weights,
                format!("weights do not match config.json ({e}); is the directory mixed up?"),
            )
        };
        let backend = match engine {
            Engine::Candle => {
                Backend::Candle(BertModel::load(vb, &dir.config).map_err(|e| mismatch(&e))?)
            }
            Engine::Fast(precision) => {
                let table = match &dir.weights {
                    WeightsFile::Safetensors(p) => {
                        let mut files = vec![p.as_path()];
                        files.extend(override_file);
                        crate::weights::SafetensorsFiles::open(&files)?
                            .read_f16(&[
                                "embeddings.word_embeddings.weight",
                                "bert.embeddings.word_embeddings.weight",
                            ])?
                            .map(|(_, values)| values)
                    }
                    WeightsFile::PytorchBin(_) => None,
                };
                Backend::Fast(FastBert::load(vb, &dir.config, table, precision).map_err(
                    |e| match e {
                        MawqifError::Invalid(_) => e,
                        other => mismatch(&other),
                    },
                )?)
            }
        };
        Ok(Self {
            backend,
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

    pub fn engine(&self) -> Engine {
        match &self.backend {
            Backend::Candle(_) => Engine::Candle,
            Backend::Fast(f) => Engine::Fast(f.precision()),
        }
    }

    /// Embed all sentences, at most `batch_size` per forward pass (and, on
    /// the fast engine, at most [`TOKEN_BUDGET`] tokens).
    /// `on_batch` is told how many sentences each finished batch held.
    pub fn embed(
        &self,
        sentences: &[TokenizedSentence],
        batch_size: usize,
        mut on_batch: impl FnMut(usize),
    ) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..sentences.len()).collect();
        // Similar lengths together: no padding waste on the candle engine,
        // even work per batch on the fast one.
        order.sort_by_key(|&i| sentences[i].ids.len());
        let mut out = vec![Vec::new(); sentences.len()];
        let token_budget = match self.backend {
            Backend::Fast(_) => TOKEN_BUDGET,
            Backend::Candle(_) => usize::MAX,
        };
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < order.len() && end - start < batch_size.max(1) {
                let len = sentences[order[end]].ids.len();
                if end > start && tokens + len > token_budget {
                    break;
                }
                tokens += len;
                end += 1;
            }
            let chunk = &order[start..end];
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| sentences[i].ids.as_slice()).collect();
            let vectors = match &self.backend {
                Backend::Fast(f) => f.pooled(&batch, self.pooling, self.normalize)?,
                Backend::Candle(m) => self.embed_batch(m, &batch)?,
            };
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
            on_batch(chunk.len());
            start = end;
        }
        Ok(out)
    }

    /// One candle forward pass over a padded batch.
    fn embed_batch(&self, model: &BertModel, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
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
        let states = model.forward(&ids, &type_ids, Some(&mask))?;
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
