//! Fine-tuning the top N encoder layers together with the head.
//!
//! Contract: [`fine_tune`] takes labelled examples split into train and dev
//! (by text), runs the frozen bottom layers once, trains the top `layers`
//! BERT layers and a linear head with AdamW and weighted cross-entropy, keeps
//! the epoch with the best dev macro-F1 (early stopping), and returns only what
//! changed: the top layers' tensors under their usual HF names, and the head.
//! At inference the override file is layered over the base weights.
//!
//! candle's own BERT layer uses a fused layer-norm kernel without a backward
//! pass, so the trainable layers here are written with differentiable basic
//! ops; they compute the same function as candle-transformers' `BertLayer`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder};
use candle_transformers::models::bert::BertModel;

use crate::encode::weights_builder;
use crate::error::{MawqifError, Result};
use crate::eval::metrics;
use crate::head::{features, FeatureSpec, Head};
use crate::label::{Label, Scores};
use crate::model::e5s1::save_safetensors;
use crate::model::ModelDir;
use crate::rng::SplitMix64;
use crate::text::Preprocessor;
use crate::tokenize::SentenceTokenizer;

use super::data::Example;
use super::fit::{head_spec, train_head, HeadKind, TrainOptions};

/// Name of the file, in a head directory, holding the fine-tuned layers.
pub const ENCODER_OVERRIDE_FILE: &str = "encoder-override.safetensors";

#[derive(Debug, Clone)]
pub struct FineTuneOptions {
    /// How many of the top encoder layers to train.
    pub layers: usize,
    pub max_epochs: usize,
    /// Epochs without dev improvement before stopping.
    pub patience: usize,
    pub lr_encoder: f64,
    pub lr_head: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub seed: u64,
    pub cues: bool,
}

impl Default for FineTuneOptions {
    fn default() -> Self {
        Self {
            layers: 4,
            max_epochs: 4,
            patience: 2,
            lr_encoder: 2e-5,
            lr_head: 1e-3,
            weight_decay: 0.01,
            batch_size: 16,
            seed: 13,
            cues: true,
        }
    }
}

/// What one epoch achieved.
#[derive(Debug, Clone, Copy)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub dev_macro_f1: Option<f64>,
}

pub struct FineTuned {
    pub head: Head,
    /// Tensors of the trained layers, under their names in the base model.
    pub overrides: HashMap<String, Tensor>,
    pub best_epoch: usize,
    pub history: Vec<EpochReport>,
}

/// One trainable BERT layer (post-LN, as in BERT).
struct TrainLayer {
    prefix: String,
    params: Vec<(String, Var)>,
}

const LAYER_PARAMS: [&str; 16] = [
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
];

fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (bsz, seq, inp) = x.dims3()?;
    let y = x
        .reshape((bsz * seq, inp))?
        .matmul(&w.t()?)?
        .broadcast_add(b)?;
    y.reshape((bsz, seq, w.dim(0)?))
}

fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(w)?.broadcast_add(b)
}

impl TrainLayer {
    fn load(
        vb: &VarBuilder,
        index: usize,
        config: &candle_transformers::models::bert::Config,
    ) -> Result<Self> {
        let prefix = format!("encoder.layer.{index}");
        let (h, f) = (config.hidden_size, config.intermediate_size);
        let mut params = Vec::new();
        for name in LAYER_PARAMS {
            let shape: Vec<usize> = match name {
                n if n.starts_with("intermediate.dense.weight") => vec![f, h],
                "intermediate.dense.bias" => vec![f],
                "output.dense.weight" => vec![h, f],
                n if n.ends_with(".weight") && !n.contains("LayerNorm") => vec![h, h],
                _ => vec![h],
            };
            let full = format!("{prefix}.{name}");
            let t = vb.get(shape, &full)?;
            params.push((full, Var::from_tensor(&t)?));
        }
        Ok(Self { prefix, params })
    }

    fn p(&self, k: usize) -> &Tensor {
        self.params[k].1.as_tensor()
    }

    fn forward(
        &self,
        x: &Tensor,
        mask_add: &Tensor,
        heads: usize,
        eps: f64,
    ) -> candle_core::Result<Tensor> {
        let (bsz, seq, hidden) = x.dims3()?;
        let d = hidden / heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((bsz, seq, heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(linear(x, self.p(0), self.p(1))?)?;
        let k = split(linear(x, self.p(2), self.p(3))?)?;
        let v = split(linear(x, self.p(4), self.p(5))?)?;
        let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(mask_add)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((bsz, seq, hidden))?;
        let attn = layer_norm(
            &(linear(&ctx, self.p(6), self.p(7))? + x)?,
            self.p(8),
            self.p(9),
            eps,
        )?;
        let inter = linear(&attn, self.p(10), self.p(11))?.gelu_erf()?;
        layer_norm(
            &(linear(&inter, self.p(12), self.p(13))? + &attn)?,
            self.p(14),
            self.p(15),
            eps,
        )
    }
}

/// Padded batch of cached bottom-layer states.
fn batch_states(
    states: &[Tensor],
    idx: &[usize],
    hidden: usize,
) -> candle_core::Result<(Tensor, Tensor)> {
    let max_len = idx
        .iter()
        .map(|&i| states[i].dim(0).unwrap_or(0))
        .max()
        .unwrap_or(1);
    let mut rows = Vec::with_capacity(idx.len());
    let mut mask = Vec::with_capacity(idx.len() * max_len);
    for &i in idx {
        let len = states[i].dim(0)?;
        let padded = if len < max_len {
            Tensor::cat(
                &[
                    &states[i],
                    &Tensor::zeros((max_len - len, hidden), DType::F32, &Device::Cpu)?,
                ],
                0,
            )?
        } else {
            states[i].clone()
        };
        rows.push(padded);
        mask.extend(std::iter::repeat_n(1f32, len));
        mask.extend(std::iter::repeat_n(0f32, max_len - len));
    }
    let x = Tensor::stack(&rows, 0)?;
    let mask = Tensor::from_vec(mask, (idx.len(), max_len), &Device::Cpu)?;
    Ok((x, mask))
}

struct Trainable {
    layers: Vec<TrainLayer>,
    head_w: Var,
    head_b: Var,
    mean: Tensor,
    scale: Tensor,
    heads: usize,
    eps: f64,
    normalize: bool,
}

impl Trainable {
    /// Logits for a batch; `cue_rows` are the cue features of its sentences.
    fn logits(
        &self,
        x: &Tensor,
        mask: &Tensor,
        cue_rows: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let mask_add = ((1.0 - mask)? * -1e9)?.unsqueeze(1)?.unsqueeze(1)?;
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h, &mask_add, self.heads, self.eps)?;
        }
        let m = mask.unsqueeze(2)?;
        let pooled = h.broadcast_mul(&m)?.sum(1)?.broadcast_div(&m.sum(1)?)?;
        let pooled = if self.normalize {
            pooled.broadcast_div(
                &pooled
                    .sqr()?
                    .sum_keepdim(1)?
                    .sqrt()?
                    .clamp(1e-12, f64::MAX)?,
            )?
        } else {
            pooled
        };
        let feats = match cue_rows {
            Some(c) => Tensor::cat(&[&pooled, c], 1)?,
            None => pooled,
        };
        let z = feats
            .broadcast_sub(&self.mean)?
            .broadcast_mul(&self.scale)?;
        z.matmul(&self.head_w.as_tensor().t()?)?
            .broadcast_add(self.head_b.as_tensor())
    }

    fn snapshot(&self) -> candle_core::Result<Vec<Tensor>> {
        let mut v: Vec<Tensor> = Vec::new();
        for l in &self.layers {
            for (_, p) in &l.params {
                v.push(p.as_tensor().copy()?);
            }
        }
        v.push(self.head_w.as_tensor().copy()?);
        v.push(self.head_b.as_tensor().copy()?);
        Ok(v)
    }
}

/// Fine-tune the top layers of `model_dir`'s encoder on `train`, stopping early on `dev`.
pub fn fine_tune(
    model_dir: &Path,
    train: &[Example],
    dev: &[Example],
    options: &FineTuneOptions,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<FineTuned> {
    if train.is_empty() {
        return Err(MawqifError::NoTrainingData);
    }
    let dir = ModelDir::open(model_dir)?;
    let config = &dir.config;
    let total_layers = config.num_hidden_layers;
    let n = options.layers.clamp(1, total_layers);
    let tokenizer =
        SentenceTokenizer::from_model_dir(model_dir, Some(dir.pad_id()), dir.profile.max_length)?;
    let pre = Preprocessor::new(dir.profile.preprocessing, dir.profile.prefix.clone());
    let device = Device::Cpu;
    let vb = weights_builder(&dir, None, &device)?;
    let mut bottom_config = config.clone();
    bottom_config.num_hidden_layers = total_layers - n;
    let bottom = BertModel::load(vb.clone(), &bottom_config)?;

    // Run the frozen part once per sentence.
    let all: Vec<&Example> = train.iter().chain(dev).collect();
    let inputs: Vec<String> = all.iter().map(|e| pre.apply(&e.text)).collect();
    let tokenized = tokenizer.encode(&inputs)?;
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by_key(|&i| tokenized[i].ids.len());
    let mut states: Vec<Tensor> = vec![Tensor::zeros(1, DType::F32, &device)?; all.len()];
    for chunk in order.chunks(32) {
        let max_len = chunk
            .iter()
            .map(|&i| tokenized[i].ids.len())
            .max()
            .unwrap_or(1);
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for &i in chunk {
            let t = &tokenized[i].ids;
            ids.extend_from_slice(t);
            ids.extend(std::iter::repeat_n(tokenizer.pad_id(), max_len - t.len()));
            mask.extend(std::iter::repeat_n(1u32, t.len()));
            mask.extend(std::iter::repeat_n(0u32, max_len - t.len()));
        }
        let ids = Tensor::from_vec(ids, (chunk.len(), max_len), &device)?;
        let mask = Tensor::from_vec(mask, (chunk.len(), max_len), &device)?;
        let out = bottom.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        for (row, &i) in chunk.iter().enumerate() {
            states[i] = out
                .get(row)?
                .narrow(0, 0, tokenized[i].ids.len())?
                .contiguous()?;
        }
    }
    let cue_spec = FeatureSpec {
        embedding_dim: config.hidden_size,
        cues: options.cues,
    };
    let cue_rows: Vec<Vec<f32>> = all
        .iter()
        .map(|e| {
            features(
                &[],
                &e.text,
                &FeatureSpec {
                    embedding_dim: 0,
                    cues: options.cues,
                },
            )
        })
        .collect();

    let layers: Vec<TrainLayer> = (total_layers - n..total_layers)
        .map(|k| TrainLayer::load(&vb, k, config))
        .collect::<Result<_>>()?;
    let mut model = Trainable {
        layers,
        head_w: Var::zeros((Label::ALL.len(), cue_spec.len()), DType::F32, &device)?,
        head_b: Var::zeros(Label::ALL.len(), DType::F32, &device)?,
        mean: Tensor::zeros(cue_spec.len(), DType::F32, &device)?,
        scale: Tensor::ones(cue_spec.len(), DType::F32, &device)?,
        heads: config.num_attention_heads,
        eps: config.layer_norm_eps,
        normalize: dir.profile.normalize,
    };
    let n_train = train.len();
    let train_idx: Vec<usize> = (0..n_train).collect();
    let dev_idx: Vec<usize> = (n_train..all.len()).collect();
    let cue_tensor = |idx: &[usize]| -> candle_core::Result<Option<Tensor>> {
        if !options.cues {
            return Ok(None);
        }
        let w = cue_rows[0].len();
        let flat: Vec<f32> = idx.iter().flat_map(|&i| cue_rows[i].clone()).collect();
        Tensor::from_vec(flat, (idx.len(), w), &device).map(Some)
    };
    let pooled_features = |model: &Trainable, idx: &[usize]| -> Result<Vec<Vec<f32>>> {
        // The head's input before standardization: identity mean/scale, no head.
        let mut out = Vec::new();
        for chunk in idx.chunks(64) {
            let (x, mask) = batch_states(&states, chunk, config.hidden_size)?;
            let mask_add = ((1.0 - &mask)? * -1e9)?.unsqueeze(1)?.unsqueeze(1)?;
            let mut h = x;
            for l in &model.layers {
                h = l.forward(&h, &mask_add, model.heads, model.eps)?;
            }
            let m = mask.unsqueeze(2)?;
            let mut pooled = h.broadcast_mul(&m)?.sum(1)?.broadcast_div(&m.sum(1)?)?;
            if model.normalize {
                pooled = pooled.broadcast_div(
                    &pooled
                        .sqr()?
                        .sum_keepdim(1)?
                        .sqrt()?
                        .clamp(1e-12, f64::MAX)?,
                )?;
            }
            for (row, &i) in pooled.to_vec2::<f32>()?.into_iter().zip(chunk) {
                let mut f = row;
                f.extend(cue_rows[i].iter().copied());
                out.push(f);
            }
        }
        Ok(out)
    };

    // Start from the frozen-feature head: a good point to fine-tune from.
    let kind = HeadKind::Softmax;
    let init_rows = pooled_features(&model, &train_idx)?;
    let labels: Vec<Label> = train.iter().map(|e| e.label).collect();
    let init = train_head(
        &init_rows,
        &labels,
        head_spec(
            &dir.profile.id,
            &dir.profile.revision,
            dir.profile.pooling,
            cue_spec.clone(),
            kind,
        ),
        &TrainOptions::default(),
    )?;
    let (w0, b0) = &init.layers[0];
    model.head_w.set(&Tensor::from_slice(
        w0,
        (Label::ALL.len(), cue_spec.len()),
        &device,
    )?)?;
    model
        .head_b
        .set(&Tensor::from_slice(b0, Label::ALL.len(), &device)?)?;
    model.mean = Tensor::from_slice(&init.feature_mean, cue_spec.len(), &device)?;
    model.scale = Tensor::from_slice(&init.feature_scale, cue_spec.len(), &device)?;

    let mut counts = [0usize; 4];
    for l in &labels {
        counts[l.index()] += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count().max(1) as f32;
    let class_w: Vec<f32> = counts
        .iter()
        .map(|&c| {
            if c == 0 {
                1.0
            } else {
                n_train as f32 / (present * c as f32)
            }
        })
        .collect();

    let enc_vars: Vec<Var> = model
        .layers
        .iter()
        .flat_map(|l| l.params.iter().map(|(_, v)| v.clone()))
        .collect();
    let params = |lr| ParamsAdamW {
        lr,
        weight_decay: options.weight_decay,
        ..Default::default()
    };
    let mut opt_enc = AdamW::new(enc_vars, params(options.lr_encoder))?;
    let mut opt_head = AdamW::new(
        vec![model.head_w.clone(), model.head_b.clone()],
        params(options.lr_head),
    )?;

    let evaluate = |model: &Trainable| -> Result<f64> {
        let mut items = Vec::new();
        for chunk in dev_idx.chunks(64) {
            let (x, mask) = batch_states(&states, chunk, config.hidden_size)?;
            let logits = model.logits(&x, &mask, cue_tensor(chunk)?.as_ref())?;
            for (row, &i) in logits.to_vec2::<f32>()?.iter().zip(chunk) {
                let e = all[i];
                items.push((e.label, e.alt, Scores::from_logits(row).best()));
            }
        }
        Ok(metrics(&items, 1).macro_f1.value)
    };

    let mut rng = SplitMix64::new(options.seed);
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    let mut history = Vec::new();
    let mut since_best = 0;
    let baseline = if dev_idx.is_empty() {
        None
    } else {
        Some(evaluate(&model)?)
    };
    if let Some(f1) = baseline {
        best = Some((f1, 0, model.snapshot()?));
        let r = EpochReport {
            epoch: 0,
            train_loss: f64::NAN,
            dev_macro_f1: Some(f1),
        };
        on_epoch(&r);
        history.push(r);
    }
    for epoch in 1..=options.max_epochs {
        let mut perm = train_idx.clone();
        for k in (1..perm.len()).rev() {
            perm.swap(k, rng.below(k + 1));
        }
        let mut loss_sum = 0.0;
        let mut batches = 0;
        for chunk in perm.chunks(options.batch_size.max(1)) {
            let (x, mask) = batch_states(&states, chunk, config.hidden_size)?;
            let logits = model.logits(&x, &mask, cue_tensor(chunk)?.as_ref())?;
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let target: Vec<f32> = chunk
                .iter()
                .flat_map(|&i| {
                    let l = all[i].label.index();
                    let w = class_w[l];
                    (0..4).map(move |k| if k == l { w } else { 0.0 })
                })
                .collect();
            let target = Tensor::from_vec(target, (chunk.len(), 4), &device)?;
            let weight_sum: f32 = chunk.iter().map(|&i| class_w[all[i].label.index()]).sum();
            let loss = ((logp * target)?.sum_all()? * (-1.0 / weight_sum as f64))?;
            let grads = loss.backward()?;
            opt_enc.step(&grads)?;
            opt_head.step(&grads)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            batches += 1;
        }
        let dev_f1 = if dev_idx.is_empty() {
            None
        } else {
            Some(evaluate(&model)?)
        };
        let r = EpochReport {
            epoch,
            train_loss: loss_sum / batches.max(1) as f64,
            dev_macro_f1: dev_f1,
        };
        on_epoch(&r);
        history.push(r);
        match dev_f1 {
            Some(f1) => {
                if best.as_ref().is_none_or(|(b, _, _)| f1 > *b) {
                    best = Some((f1, epoch, model.snapshot()?));
                    since_best = 0;
                } else {
                    since_best += 1;
                    if since_best >= options.patience {
                        break;
                    }
                }
            }
            None => best = Some((f64::NAN, epoch, model.snapshot()?)),
        }
    }
    let (_, best_epoch, weights) = best.ok_or(MawqifError::NoTrainingData)?;
    let mut overrides = HashMap::new();
    let mut k = 0;
    for l in &model.layers {
        for (name, _) in &l.params {
            overrides.insert(name.clone(), weights[k].clone());
            k += 1;
        }
        let _ = &l.prefix;
    }
    let head_w: Vec<f32> = weights[k].flatten_all()?.to_vec1()?;
    let head_b: Vec<f32> = weights[k + 1].to_vec1()?;
    let mut spec = head_spec(
        &dir.profile.id,
        &dir.profile.revision,
        dir.profile.pooling,
        cue_spec,
        kind,
    );
    spec.encoder_override = Some(ENCODER_OVERRIDE_FILE.to_string());
    let head = Head {
        spec,
        feature_mean: init.feature_mean.clone(),
        feature_scale: init.feature_scale.clone(),
        layers: vec![(head_w, head_b)],
    };
    Ok(FineTuned {
        head,
        overrides,
        best_epoch,
        history,
    })
}

/// Save a fine-tuned head: `head.*` plus the override file, all atomically.
pub fn save(tuned: &FineTuned, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| MawqifError::io(dir, e))?;
    save_safetensors(&tuned.overrides, &dir.join(ENCODER_OVERRIDE_FILE))?;
    tuned.head.save(dir)
}
