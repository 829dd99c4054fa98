//! Stage 4: embed sentences with a BERT encoder.
//!
//! Contract: [`Encoder::embed`] returns one pooled vector (length
//! `hidden_size`) per tokenized input, in input order. Inputs are sorted by
//! length and batched internally; results do not depend on the batch size
//! beyond float rounding. [`Embedder`] puts preprocessing and tokenization
//! in front of it: text in, vectors out.
//!
//! Engines are backends behind one small private trait ([`Backend`]: token
//! ids in, packed token states out); batching and pooling are written once
//! here, above them. [`Engine::Fast`] is mawqif's own CPU forward
//! ([`fast`]: no padding, bf16 or f32 matrix products) and [`Engine::Candle`]
//! candle's `BertModel`, the reference.

mod candle;
pub mod embedder;
pub mod fast;
pub mod pooling;

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::BertModel;

use crate::error::{MawqifError, Result};
use crate::model::weights::SafetensorsFiles;
use crate::model::{ModelDir, Pooling, WeightsFile};
use crate::tokenize::TokenizedSentence;

pub use embedder::{Embedder, RunOptions, OVERLONG_FACTOR};
use fast::{FastBert, Precision};

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
            other => Err(MawqifError::UnknownEngine(other.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Fast(p) => p.name(),
            Engine::Candle => "candle",
        }
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::auto()
    }
}

/// What an engine does: token ids in, final token states out.
trait Backend: Send + Sync {
    /// States of a batch, packed: the rows of each sequence in turn,
    /// `[Σ len, hidden]`.
    fn token_states(&self, batch: &[&[u32]]) -> Result<Vec<f32>>;
    /// Most tokens in one call (working memory grows with it).
    fn max_batch_tokens(&self) -> usize;
    /// What runs the matrix products, for reports (`amx`, `avx512-bf16`,
    /// `f32`, joined by `+` when layers differ; `candle`).
    fn product_kernel(&self) -> String;
}

/// Most tokens in one forward pass of the fast engine (its working memory
/// grows with this; throughput barely does beyond it).
const FAST_TOKEN_BUDGET: usize = 8192;

impl Backend for FastBert {
    fn token_states(&self, batch: &[&[u32]]) -> Result<Vec<f32>> {
        FastBert::token_states(self, batch)
    }

    fn max_batch_tokens(&self) -> usize {
        FAST_TOKEN_BUDGET
    }

    fn product_kernel(&self) -> String {
        let names: Vec<&str> = self.product_kernels().iter().map(|k| k.name()).collect();
        names.join("+")
    }
}

pub struct Encoder {
    backend: Box<dyn Backend>,
    engine: Engine,
    pooling: Pooling,
    normalize: bool,
    hidden_size: usize,
}

impl Encoder {
    /// Load the weights of `dir` (safetensors read tensor by tensor, or a
    /// PyTorch zip) for `engine`. `override_file` (safetensors) replaces
    /// base tensors of the same name: that is how fine-tuned layers are
    /// layered over a base model.
    pub fn load(
        dir: &ModelDir,
        pad_id: u32,
        override_file: Option<&Path>,
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
        let backend: Box<dyn Backend> = match engine {
            Engine::Candle => Box::new(candle::CandleBert {
                model: BertModel::load(vb, &dir.config).map_err(|e| mismatch(&e))?,
                hidden: dir.config.hidden_size,
                pad_id,
            }),
            Engine::Fast(precision) => {
                let table = match &dir.weights {
                    WeightsFile::Safetensors(p) => {
                        let mut files = vec![p.as_path()];
                        files.extend(override_file);
                        SafetensorsFiles::open(&files)?
                            .read_f16(&[
                                "embeddings.word_embeddings.weight",
                                "bert.embeddings.word_embeddings.weight",
                            ])?
                            .map(|(_, values)| values)
                    }
                    WeightsFile::PytorchBin(_) => None,
                };
                Box::new(FastBert::load(vb, &dir.config, table, precision).map_err(
                    |e| match e {
                        MawqifError::Bf16Unsupported => e,
                        other => mismatch(&other),
                    },
                )?)
            }
        };
        Ok(Self {
            backend,
            engine,
            pooling: dir.profile.pooling,
            normalize: dir.profile.normalize,
            hidden_size: dir.config.hidden_size,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// What runs the matrix products (see [`Backend::product_kernel`]).
    pub fn product_kernel(&self) -> String {
        self.backend.product_kernel()
    }

    /// Embed all sentences, at most `batch_size` per forward pass (and at
    /// most the engine's token budget). `on_batch` is told how many
    /// sentences each finished batch held.
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
        let token_budget = self.backend.max_batch_tokens();
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
            let lens: Vec<usize> = batch.iter().map(|s| s.len()).collect();
            let states = self.backend.token_states(&batch)?;
            let vectors = pooling::pool(
                &states,
                self.hidden_size,
                &lens,
                self.pooling,
                self.normalize,
            );
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
            on_batch(chunk.len());
            start = end;
        }
        Ok(out)
    }
}

/// A `VarBuilder` over the model's weights, with `override_file` layered on top.
pub fn weights_builder(
    dir: &ModelDir,
    override_file: Option<&Path>,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    match (&dir.weights, override_file) {
        (WeightsFile::Safetensors(p), o) => {
            let mut files = vec![p.as_path()];
            files.extend(o);
            let backend = SafetensorsFiles::open(&files)?;
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
