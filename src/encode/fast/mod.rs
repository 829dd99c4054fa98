//! Stage 4, fast path: a BERT encoder forward written for CPU inference.
//!
//! Contract: [`FastBert::token_states`] maps a batch of token-id sequences
//! to their final hidden states, packed (no padding), computing the same
//! function as candle's `BertModel` (tested against it: to float rounding in
//! f32, and to a cosine bound in bf16).
//!
//! Why it is faster than the candle path:
//! - sentences are packed end to end with no padding: the linear layers see
//!   only real tokens, and attention runs per sentence ([`attention`]);
//! - Q, K and V are one fused matrix product;
//! - with [`Precision::Bf16`] the linear layers run on an AVX-512 BF16 kernel
//!   (`vdpbf16ps`, f32 accumulation) over weights packed once at load
//!   ([`linear`], [`kernels`]), or on AMX tiles (`tdpbf16ps`) where the CPU
//!   has them; otherwise on f32 `gemm`;
//! - the plain loops between the products (bf16 conversion, GELU, softmax,
//!   layer norm) run compiled for AVX-512F where the CPU has it
//!   ([`kernels::widest`]): 16 lanes instead of the baseline's 4, same bits;
//! - each query row of attention is one fused kernel (scores, softmax,
//!   weighted values) where AVX-512F is present;
//! - a batch allocates its buffers once and every layer reuses them;
//! - the word-embedding table, the largest tensor by far (250k × 384 for
//!   e5), is kept in f16 and read from disk straight into that form.

mod attention;
pub mod kernels;
pub(crate) mod linear;
pub(crate) mod math;

pub use linear::ProductKernel;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};
use half::f16;
use rayon::prelude::*;

use crate::error::{MawqifError, Result};

use kernels::Avx512Bf16;
use linear::Linear;
use math::LayerNorm;

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
    Avx512Bf16::detect().is_some()
}

/// Do bf16 products run on AMX tiles here (the CPU has them and Linux
/// lets this process use them)? Otherwise they run on AVX-512 BF16.
pub fn amx_supported() -> bool {
    kernels::Amx::detect().is_some()
}

fn to_vec(t: Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
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
            return Err(MawqifError::Bf16Unsupported);
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
                return Err(MawqifError::ShapeMismatch(format!(
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

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// The kernels the linear layers run on, each named once, in a fixed
    /// order: one for every shipped encoder, two where some k is not in
    /// whole AMX tiles.
    pub fn product_kernels(&self) -> Vec<ProductKernel> {
        let mut kernels: Vec<ProductKernel> = self
            .layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.attn_out, &l.intermediate, &l.output])
            .map(Linear::kernel)
            .collect();
        kernels.sort();
        kernels.dedup();
        kernels
    }

    /// Final token states of the packed batch: `[Σ len, hidden]`, the rows
    /// of each sequence in turn.
    pub fn token_states(&self, batch: &[&[u32]]) -> Result<Vec<f32>> {
        let h = self.hidden;
        let total: usize = batch.iter().map(|s| s.len()).sum();
        let mut offsets = Vec::with_capacity(batch.len());
        let mut x = vec![0f32; total * h];
        let mut at = 0;
        for s in batch {
            if s.len() > self.max_positions {
                return Err(MawqifError::SequenceTooLong {
                    tokens: s.len(),
                    positions: self.max_positions,
                });
            }
            for (pos, &id) in s.iter().enumerate() {
                let id = id as usize;
                if id >= self.vocab {
                    return Err(MawqifError::TokenOutOfVocab {
                        id,
                        vocab: self.vocab,
                    });
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
        // The whole pass runs on one of rayon's workers: the parallel steps
        // inside it then start from inside the pool, instead of each one
        // waking the pool from outside and sleeping until it is done.
        rayon::scope(|_| {
            let wide = kernels::Avx512F::detect();
            x.par_chunks_mut(h)
                .for_each(|row| kernels::widest(wide, || self.embed_norm.normalize_row(row)));
            let mut work = Workspace::new(total, h, self.layers.first());
            for layer in &self.layers {
                self.layer_forward(layer, &mut x, &mut work, total, &offsets);
            }
        });
        Ok(x)
    }

    /// One encoder layer: `x` (`[total, hidden]`) becomes the layer's output.
    fn layer_forward(
        &self,
        layer: &Layer,
        x: &mut [f32],
        work: &mut Workspace,
        total: usize,
        offsets: &[(usize, usize)],
    ) {
        let Workspace {
            qkv,
            context,
            attn,
            inter,
            packed,
        } = work;
        layer.qkv.forward_into(x, total, qkv, packed);
        attention::attention(qkv, total, offsets, self.hidden, self.heads, context);
        layer.attn_out.forward_into(context, total, attn, packed);
        layer.attn_norm.apply_residual(attn, x);
        let (wide, act) = (kernels::Avx512F::detect(), self.act);
        let activate =
            |row: &mut [f32]| kernels::widest(wide, || math::activate_in_place(row, act));
        layer
            .intermediate
            .forward_into_then(attn, total, inter, packed, Some(&activate));
        // `x` is spent (the residual above was its last use): the output
        // product goes into it.
        layer.output.forward_into(inter, total, x, packed);
        layer.out_norm.apply_residual(x, attn);
    }
}

/// The buffers between a layer's steps, allocated once per batch and
/// reused by all its layers: fresh ones per step were about a tenth of the
/// encoder's time (zeroing, and the kernel clearing new pages).
struct Workspace {
    qkv: Vec<f32>,
    context: Vec<f32>,
    attn: Vec<f32>,
    inter: Vec<f32>,
    /// bf16 activations of whichever product runs.
    packed: Vec<u32>,
}

impl Workspace {
    fn new(total: usize, hidden: usize, layer: Option<&Layer>) -> Self {
        let (qkv, inter) = layer.map_or((0, 0), |l| (l.qkv.outputs(), l.intermediate.outputs()));
        Self {
            qkv: vec![0.0; total * qkv],
            context: vec![0.0; total * hidden],
            attn: vec![0.0; total * hidden],
            inter: vec![0.0; total * inter],
            packed: Vec::new(),
        }
    }
}

/// Where a check needs AVX-512 and the CPU lacks it: a loud skip, or a
/// failure when `MAWQIF_REQUIRE_BF16` is set (CI sets it on capable CPUs,
/// so the default engine's path can never go untested there).
#[cfg(test)]
pub(crate) fn skip_without_bf16(what: &str) {
    skip_or_fail(
        what,
        "AVX-512 BF16",
        "MAWQIF_REQUIRE_BF16",
        required("MAWQIF_REQUIRE_BF16"),
    );
}

/// The same for checks of the AMX path: `MAWQIF_REQUIRE_AMX=1` (CI sets it
/// where /proc/cpuinfo lists amx_bf16) makes a skip a failure.
#[cfg(test)]
pub(crate) fn skip_without_amx(what: &str) {
    skip_or_fail(
        what,
        "usable AMX tiles",
        "MAWQIF_REQUIRE_AMX",
        required("MAWQIF_REQUIRE_AMX"),
    );
}

#[cfg(test)]
fn required(variable: &str) -> bool {
    std::env::var_os(variable).is_some_and(|v| v == "1")
}

/// Skip `what` loudly for want of `feature`, or fail where `variable`
/// requires it.
#[cfg(test)]
fn skip_or_fail(what: &str, feature: &str, variable: &str, required: bool) {
    if required {
        panic!("{what}: this CPU lacks {feature} but {variable}=1");
    }
    eprintln!("SKIPPED {what}: this CPU lacks {feature}");
}

#[cfg(test)]
mod require_bf16 {
    #[test]
    #[should_panic(expected = "MAWQIF_REQUIRE_BF16=1")]
    fn a_required_bf16_check_fails_instead_of_skipping() {
        super::skip_or_fail("a bf16 check", "AVX-512 BF16", "MAWQIF_REQUIRE_BF16", true);
    }

    #[test]
    fn an_optional_bf16_check_skips() {
        super::skip_or_fail("a bf16 check", "AVX-512 BF16", "MAWQIF_REQUIRE_BF16", false);
    }
}

/// Microbenchmark, run by hand:
/// `cargo test --release --lib gemm_speed -- --ignored --nocapture`.
#[cfg(test)]
mod gemm_speed {
    #[test]
    #[ignore]
    fn gemm_speed() {
        use super::*;
        for (m, n, k) in [(1070, 1152, 384), (1070, 1536, 384), (1070, 384, 1536)] {
            let x = vec![0.5f32; m * k];
            let w = vec![0.25f32; n * k];
            let Ok(lin) = Linear::new(w, n, k, vec![0.0; n], Precision::Bf16) else {
                return;
            };
            let reps = 20;
            // Buffers reused as the encoder reuses them.
            let (mut y, mut scratch) = (vec![0f32; m * n], Vec::new());
            lin.forward_into(&x, m, &mut y, &mut scratch);
            let t = std::time::Instant::now();
            for _ in 0..reps {
                lin.forward_into(&x, m, &mut y, &mut scratch);
                std::hint::black_box(&y);
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
