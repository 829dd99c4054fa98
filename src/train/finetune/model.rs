//! The encoder as it trains: BERT layers in f32 on packed (unpadded)
//! sentences, each linear layer with a LoRA update, biases and layer norms
//! trainable, embeddings frozen; a forward pass that keeps what backward
//! needs, and the backward pass written out by hand.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};
use half::f16;

use crate::encode::fast::Precision;
use crate::error::{MawqifError, Result};
use crate::rng::SplitMix64;

use super::ops::{self, AttentionCache, NormCache};
use super::param::{LoraCache, LoraLinear, Param};

/// Each sentence's (first row, length) in a packed batch.
pub(super) type Offsets = Vec<(usize, usize)>;

/// How the low-rank updates are shaped.
#[derive(Debug, Clone, Copy)]
pub(super) struct LoraShape {
    pub(super) rank: usize,
    pub(super) alpha: f32,
    /// Of the frozen weights' products.
    pub(super) precision: Precision,
}

struct Norm {
    gamma: Param,
    beta: Param,
}

struct Layer {
    qkv: LoraLinear,
    attn_out: LoraLinear,
    norm1: Norm,
    inter: LoraLinear,
    output: LoraLinear,
    norm2: Norm,
}

/// What one layer's backward pass needs.
pub(super) struct LayerCache {
    x: Vec<f32>,
    qkv: Vec<f32>,
    qkv_lora: LoraCache,
    attention: AttentionCache,
    context: Vec<f32>,
    attn_out_lora: LoraCache,
    norm1: NormCache,
    h1: Vec<f32>,
    u: Vec<f32>,
    inter_lora: LoraCache,
    g: Vec<f32>,
    output_lora: LoraCache,
    norm2: NormCache,
}

pub(super) struct TuneModel {
    hidden: usize,
    heads: usize,
    eps: f32,
    vocab: usize,
    max_positions: usize,
    word: Vec<f16>,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    embed_gamma: Vec<f32>,
    embed_beta: Vec<f32>,
    layers: Vec<Layer>,
    /// Layers below this one stay frozen (no LoRA, no cache, no backward).
    first_trainable: usize,
    /// `bert.` when the checkpoint's names carry it.
    prefix: String,
}

fn to_vec(t: Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

impl TuneModel {
    /// Load the base weights; layers from `first_trainable` up get LoRA.
    pub(super) fn load(
        vb: VarBuilder,
        config: &BertConfig,
        word: Option<Vec<f16>>,
        first_trainable: usize,
        lora: LoraShape,
        rng: &mut SplitMix64,
    ) -> Result<Self> {
        if config.hidden_act != HiddenAct::Gelu {
            return Err(MawqifError::ShapeMismatch(format!(
                "fine-tuning supports BERT encoders with erf GELU, not {:?}",
                config.hidden_act
            )));
        }
        let prefix = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let vb = if prefix.is_empty() { vb } else { vb.pp("bert") };
        let (h, v, p, i) = (
            config.hidden_size,
            config.vocab_size,
            config.max_position_embeddings,
            config.intermediate_size,
        );
        let emb = vb.pp("embeddings");
        let word = match word {
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
        let token_types = to_vec(emb.get(
            (config.type_vocab_size.max(1), h),
            "token_type_embeddings.weight",
        )?)?;
        let linear = |vb: &VarBuilder, n: usize, k: usize| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((
                to_vec(vb.get((n, k), "weight")?)?,
                to_vec(vb.get(n, "bias")?)?,
            ))
        };
        let norm = |vb: &VarBuilder| -> Result<Norm> {
            Ok(Norm {
                gamma: Param::new(to_vec(vb.get(h, "weight")?)?, false),
                beta: Param::new(to_vec(vb.get(h, "bias")?)?, false),
            })
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let lv = vb.pp(format!("encoder.layer.{l}"));
            let att = lv.pp("attention");
            let (mut w, mut b) = (Vec::new(), Vec::new());
            for part in ["self.query", "self.key", "self.value"] {
                let (pw, pb) = linear(&att.pp(part), h, h)?;
                w.extend(pw);
                b.extend(pb);
            }
            let qkv = LoraLinear::new(
                w,
                b,
                3 * h,
                h,
                3,
                lora.rank,
                lora.alpha,
                lora.precision,
                rng,
            )?;
            let (w, b) = linear(&att.pp("output.dense"), h, h)?;
            let attn_out =
                LoraLinear::new(w, b, h, h, 1, lora.rank, lora.alpha, lora.precision, rng)?;
            let (w, b) = linear(&lv.pp("intermediate.dense"), i, h)?;
            let inter = LoraLinear::new(w, b, i, h, 1, lora.rank, lora.alpha, lora.precision, rng)?;
            let (w, b) = linear(&lv.pp("output.dense"), h, i)?;
            let output =
                LoraLinear::new(w, b, h, i, 1, lora.rank, lora.alpha, lora.precision, rng)?;
            layers.push(Layer {
                qkv,
                attn_out,
                norm1: norm(&att.pp("output.LayerNorm"))?,
                inter,
                output,
                norm2: norm(&lv.pp("output.LayerNorm"))?,
            });
        }
        let embed_norm = emb.pp("LayerNorm");
        Ok(Self {
            hidden: h,
            heads: config.num_attention_heads,
            eps: config.layer_norm_eps as f32,
            vocab: v,
            max_positions: p,
            word,
            position: to_vec(emb.get((p, h), "position_embeddings.weight")?)?,
            token_type0: token_types[..h].to_vec(),
            embed_gamma: to_vec(embed_norm.get(h, "weight")?)?,
            embed_beta: to_vec(embed_norm.get(h, "bias")?)?,
            layers,
            first_trainable: first_trainable.min(config.num_hidden_layers),
            prefix: prefix.to_string(),
        })
    }

    pub(super) fn hidden(&self) -> usize {
        self.hidden
    }

    /// Every trainable tensor, in a fixed order.
    pub(super) fn params_mut(&mut self) -> Vec<&mut Param> {
        let first = self.first_trainable;
        let mut out = Vec::new();
        for layer in self.layers.iter_mut().skip(first) {
            let Layer {
                qkv,
                attn_out,
                norm1,
                inter,
                output,
                norm2,
            } = layer;
            out.extend(qkv.params_mut());
            out.extend(attn_out.params_mut());
            out.extend([&mut norm1.gamma, &mut norm1.beta]);
            out.extend(inter.params_mut());
            out.extend(output.params_mut());
            out.extend([&mut norm2.gamma, &mut norm2.beta]);
        }
        out
    }

    /// Embedding-layer output of a packed batch, and each sentence's (first row, length).
    pub(super) fn embed(&self, batch: &[&[u32]]) -> Result<(Vec<f32>, Offsets)> {
        let h = self.hidden;
        let total: usize = batch.iter().map(|s| s.len()).sum();
        let mut x = vec![0f32; total * h];
        let mut offsets = Vec::with_capacity(batch.len());
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
                let word = &self.word[id * h..(id + 1) * h];
                let position = &self.position[pos * h..(pos + 1) * h];
                for (c, v) in row.iter_mut().enumerate() {
                    *v = word[c].to_f32() + position[c] + self.token_type0[c];
                }
            }
            offsets.push((at, s.len()));
            at += s.len();
        }
        let (x, _) = ops::layer_norm(&x, &self.embed_gamma, &self.embed_beta, self.eps);
        Ok((x, offsets))
    }

    /// Final token states; with `keep`, the caches of the trainable layers.
    pub(super) fn forward(
        &self,
        mut x: Vec<f32>,
        offsets: &[(usize, usize)],
        keep: bool,
    ) -> (Vec<f32>, Vec<LayerCache>) {
        let m = x.len() / self.hidden;
        let mut caches = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let (out, cache) = self.layer_forward(layer, x, m, offsets);
            if keep && l >= self.first_trainable {
                caches.push(cache);
            }
            x = out;
        }
        (x, caches)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        x: Vec<f32>,
        m: usize,
        offsets: &[(usize, usize)],
    ) -> (Vec<f32>, LayerCache) {
        let (qkv, qkv_lora) = layer.qkv.forward(&x, m);
        let (context, attention) = ops::attention(&qkv, offsets, self.hidden, self.heads);
        let (mut r1, attn_out_lora) = layer.attn_out.forward(&context, m);
        r1.iter_mut().zip(&x).for_each(|(a, b)| *a += b);
        let (h1, norm1) = ops::layer_norm(
            &r1,
            &layer.norm1.gamma.value,
            &layer.norm1.beta.value,
            self.eps,
        );
        let (u, inter_lora) = layer.inter.forward(&h1, m);
        let g = ops::gelu(&u);
        let (mut r2, output_lora) = layer.output.forward(&g, m);
        r2.iter_mut().zip(&h1).for_each(|(a, b)| *a += b);
        let (h2, norm2) = ops::layer_norm(
            &r2,
            &layer.norm2.gamma.value,
            &layer.norm2.beta.value,
            self.eps,
        );
        (
            h2,
            LayerCache {
                x,
                qkv,
                qkv_lora,
                attention,
                context,
                attn_out_lora,
                norm1,
                h1,
                u,
                inter_lora,
                g,
                output_lora,
                norm2,
            },
        )
    }

    /// Accumulate gradients of every trainable tensor from the gradient of
    /// the final token states.
    pub(super) fn backward(
        &mut self,
        mut dh: Vec<f32>,
        caches: Vec<LayerCache>,
        offsets: &[(usize, usize)],
    ) {
        let m = dh.len() / self.hidden;
        let (hidden, heads, first) = (self.hidden, self.heads, self.first_trainable);
        for (l, cache) in (first..self.layers.len()).zip(caches).rev() {
            let layer = &mut self.layers[l];
            let want_dx = l > first;
            let dr2 = ops::layer_norm_backward(
                &dh,
                &cache.norm2,
                &layer.norm2.gamma.value,
                &mut layer.norm2.gamma.grad,
                &mut layer.norm2.beta.grad,
            );
            let dg = layer
                .output
                .backward(&dr2, &cache.g, &cache.output_lora, m, true)
                .unwrap_or_default();
            let du = ops::gelu_backward(&dg, &cache.u);
            let mut dh1 = layer
                .inter
                .backward(&du, &cache.h1, &cache.inter_lora, m, true)
                .unwrap_or_default();
            dh1.iter_mut().zip(&dr2).for_each(|(a, b)| *a += b);
            let dr1 = ops::layer_norm_backward(
                &dh1,
                &cache.norm1,
                &layer.norm1.gamma.value,
                &mut layer.norm1.gamma.grad,
                &mut layer.norm1.beta.grad,
            );
            let dctx = layer
                .attn_out
                .backward(&dr1, &cache.context, &cache.attn_out_lora, m, true)
                .unwrap_or_default();
            let dqkv = ops::attention_backward(
                &dctx,
                &cache.qkv,
                &cache.attention,
                offsets,
                hidden,
                heads,
            );
            let dx = layer
                .qkv
                .backward(&dqkv, &cache.x, &cache.qkv_lora, m, want_dx);
            if let Some(mut dx) = dx {
                dx.iter_mut().zip(&dr1).for_each(|(a, b)| *a += b);
                dh = dx;
            }
        }
    }

    /// The trained tensors under their names in the base checkpoint:
    /// biases and layer norms whole, each weight's update as `.lora_a`
    /// (`[rank, in]`) and `.lora_b` (`[out, rank]`, scale folded in), so
    /// that the loader adds `lora_b · lora_a` to the weight.
    pub(super) fn overrides(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        let dev = &Device::Cpu;
        let put = |out: &mut HashMap<String, Tensor>,
                   name: String,
                   v: &[f32],
                   shape: &[usize],
                   half: bool|
         -> Result<()> {
            let t = Tensor::from_slice(v, shape, dev)?;
            let t = if half {
                t.to_dtype(candle_core::DType::F16)?
            } else {
                t
            };
            out.insert(name, t);
            Ok(())
        };
        let h = self.hidden;
        for (l, layer) in self.layers.iter().enumerate().skip(self.first_trainable) {
            let base = format!("{}encoder.layer.{l}", self.prefix);
            let linears: [(&LoraLinear, [&str; 3]); 4] = [
                (
                    &layer.qkv,
                    [
                        "attention.self.query",
                        "attention.self.key",
                        "attention.self.value",
                    ],
                ),
                (&layer.attn_out, ["attention.output.dense", "", ""]),
                (&layer.inter, ["intermediate.dense", "", ""]),
                (&layer.output, ["output.dense", "", ""]),
            ];
            for (lin, names) in linears {
                let rows = lin.n / lin.groups;
                for (g, (a, b)) in lin.update_factors().into_iter().enumerate() {
                    let name = format!("{base}.{}", names[g]);
                    put(
                        &mut out,
                        format!("{name}.lora_a"),
                        &a,
                        &[lin.rank, lin.k],
                        true,
                    )?;
                    put(
                        &mut out,
                        format!("{name}.lora_b"),
                        &b,
                        &[rows, lin.rank],
                        true,
                    )?;
                    let bias = &lin.bias.value[g * rows..(g + 1) * rows];
                    put(&mut out, format!("{name}.bias"), bias, &[rows], false)?;
                }
            }
            for (norm, name) in [
                (&layer.norm1, "attention.output.LayerNorm"),
                (&layer.norm2, "output.LayerNorm"),
            ] {
                put(
                    &mut out,
                    format!("{base}.{name}.weight"),
                    &norm.gamma.value,
                    &[h],
                    false,
                )?;
                put(
                    &mut out,
                    format!("{base}.{name}.bias"),
                    &norm.beta.value,
                    &[h],
                    false,
                )?;
            }
        }
        Ok(out)
    }
}
