//! Fine-tuning the encoder with its head, on the CPU.
//!
//! Contract: [`fine_tune`] takes labelled examples split into train and dev
//! (by text) and trains every layer from `layers` below the top (all by
//! default) together with a linear head: a LoRA update on each linear layer,
//! and the biases and layer norms, with AdamW on a class-weighted
//! cross-entropy, a linear warm-up and decay of the learning rate, and early
//! stopping on dev macro-F1. Embeddings stay frozen. It returns only what
//! changed ([`FineTuned::overrides`]): biases and norms under their names in
//! the base model, each weight's update as a `.lora_a`/`.lora_b` pair that
//! the loader adds to it ([`crate::model::weights`]). Same data, options,
//! seed and thread count give the same result.
//!
//! The passes are written by hand on packed (unpadded) sentences in f32
//! ([`model`], [`ops`], [`param`]), so an epoch over 7,000 sentences takes
//! minutes on two cores, not hours.

mod model;
mod ops;
mod param;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::encode::fast::Precision;
use crate::encode::pooling::pool;
use crate::encode::weights_builder;
use crate::error::{MawqifError, Result};
use crate::eval::metrics;
use crate::head::features::previous_vector_features;
use crate::head::{features, FeatureSpec, Head};
use crate::label::{Label, LabelSet, Scores};
use crate::model::e5s1::save_safetensors;
use crate::model::weights::SafetensorsFiles;
use crate::model::{ModelDir, Pooling, WeightsFile};
use crate::rng::SplitMix64;
use crate::text::{web_spelling, Preprocessor};
use crate::tokenize::SentenceTokenizer;

use super::data::{label_set, Example};
use super::fit::{head_spec, train_head, HeadKind, TrainOptions};
use model::{LoraShape, TuneModel};
use param::Param;

/// Name of the file, in a head directory, holding the fine-tuned tensors.
pub const ENCODER_OVERRIDE_FILE: &str = "encoder-override.safetensors";

#[derive(Debug, Clone)]
pub struct FineTuneOptions {
    /// How many of the top encoder layers train (at least 1; more than the
    /// model has means all).
    pub layers: usize,
    pub max_epochs: usize,
    /// Epochs without dev improvement before stopping.
    pub patience: usize,
    /// Peak learning rate of the encoder's tensors (LoRA, biases, norms).
    pub lr_encoder: f64,
    pub lr_head: f64,
    pub weight_decay: f64,
    /// Sentences per optimisation step.
    pub batch_size: usize,
    pub seed: u64,
    pub cues: bool,
    /// Rank of the LoRA updates and their scale numerator (update = α/r · B·A).
    pub rank: usize,
    pub alpha: f32,
    /// Share of all steps spent warming the learning rate up from zero.
    pub warmup: f64,
    /// Of the frozen weights' matrix products (bf16 where the CPU has it,
    /// as at inference); everything else trains in f32.
    pub precision: Precision,
    /// The previous unit's cue features go into the head too.
    pub context: bool,
    /// The previous unit's pooled vector goes into the head too; its
    /// encoding trains with the rest (batches are runs of consecutive units).
    pub context_embedding: bool,
    /// The head's labels (default: those of the training and dev examples).
    pub labels: Option<LabelSet>,
    /// Share of the training units (0 to 1) rewritten once, before training,
    /// in web spellings ([`crate::text::web_spelling`]); dev units never are.
    pub web_spelling: f64,
}

impl Default for FineTuneOptions {
    fn default() -> Self {
        Self {
            layers: usize::MAX,
            max_epochs: 4,
            patience: 2,
            lr_encoder: 5e-4,
            lr_head: 1e-3,
            weight_decay: 0.01,
            batch_size: 16,
            seed: 13,
            cues: true,
            rank: 16,
            alpha: 32.0,
            warmup: 0.1,
            precision: Precision::best_available(),
            context: false,
            context_embedding: false,
            labels: None,
            web_spelling: 0.0,
        }
    }
}

/// What one epoch achieved.
#[derive(Debug, Clone, Copy)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub dev_macro_f1: Option<f64>,
    pub seconds: f64,
}

pub struct FineTuned {
    pub head: Head,
    /// The trained tensors, under their names in the base model.
    pub overrides: HashMap<String, Tensor>,
    pub best_epoch: usize,
    pub history: Vec<EpochReport>,
    /// The trained model's scores of the dev examples, in order.
    pub dev_scores: Vec<Scores>,
}

/// The head as it trains: logits = W · ((features − mean) · scale) + b,
/// with the standardization fixed from the base model's features.
struct TrainHead {
    w: Param,
    b: Param,
    mean: Vec<f32>,
    scale: Vec<f32>,
}

/// Everything the epochs share.
struct Run<'a> {
    model: TuneModel,
    head: TrainHead,
    /// Token ids of every example (train, then dev), then of previous units
    /// that are not examples themselves (context only).
    tokens: Vec<Vec<u32>>,
    cue_rows: Vec<Vec<f32>>,
    /// Where in `tokens` each example's previous unit is (context embedding).
    previous: Vec<Option<usize>>,
    examples: Vec<&'a Example>,
    /// The head's labels, and each example's label as an index into them.
    labels: LabelSet,
    label_index: Vec<usize>,
    class_weights: Vec<f32>,
    pooling: Pooling,
    normalize: bool,
    options: &'a FineTuneOptions,
}

/// Fine-tune `model_dir`'s encoder on `train`, stopping early on `dev`.
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
    let respelled = respell_share(train, options.web_spelling, options.seed);
    let mut run = Run::prepare(&dir, &respelled, dev, options)?;
    let train_idx: Vec<usize> = (0..train.len()).collect();
    let dev_idx: Vec<usize> = (train.len()..train.len() + dev.len()).collect();
    let init = run.init_head(&dir, &train_idx)?;

    let mut history = Vec::new();
    let mut best: Option<(f64, usize, Vec<Vec<f32>>)> = None;
    if !dev_idx.is_empty() {
        let started = std::time::Instant::now();
        let f1 = run.dev_macro_f1(&dev_idx)?;
        let r = EpochReport {
            epoch: 0,
            train_loss: f64::NAN,
            dev_macro_f1: Some(f1),
            seconds: started.elapsed().as_secs_f64(),
        };
        on_epoch(&r);
        history.push(r);
        best = Some((f1, 0, run.snapshot()));
    }
    let steps_per_epoch = train_idx.len().div_ceil(options.batch_size.max(1));
    let total_steps = (steps_per_epoch * options.max_epochs.max(1)).max(1);
    let mut rng = SplitMix64::new(options.seed ^ 0x5eed);
    let mut step = 0;
    let mut since_best = 0;
    for epoch in 1..=options.max_epochs.max(1) {
        let started = std::time::Instant::now();
        let loss = run.train_epoch(&train_idx, &mut rng, &mut step, total_steps)?;
        let dev_f1 = if dev_idx.is_empty() {
            None
        } else {
            Some(run.dev_macro_f1(&dev_idx)?)
        };
        let r = EpochReport {
            epoch,
            train_loss: loss,
            dev_macro_f1: dev_f1,
            seconds: started.elapsed().as_secs_f64(),
        };
        on_epoch(&r);
        history.push(r);
        match dev_f1 {
            Some(f1) if best.as_ref().is_none_or(|(b, _, _)| f1 > *b) => {
                best = Some((f1, epoch, run.snapshot()));
                since_best = 0;
            }
            Some(_) => {
                since_best += 1;
                if since_best >= options.patience.max(1) {
                    break;
                }
            }
            None => best = Some((f64::NAN, epoch, run.snapshot())),
        }
    }
    let (_, best_epoch, weights) = best.ok_or(MawqifError::NoTrainingData)?;
    run.restore(weights);
    let dev_scores = run.dev_scores(&dev_idx)?;
    let mut spec = head_spec(
        run.labels.clone(),
        &dir.profile.id,
        &dir.profile.revision,
        dir.profile.pooling,
        init.spec.features.clone(),
        HeadKind::Softmax,
    );
    spec.encoder_override = Some(ENCODER_OVERRIDE_FILE.to_string());
    let head = Head {
        spec,
        feature_mean: run.head.mean.clone(),
        feature_scale: run.head.scale.clone(),
        layers: vec![(run.head.w.value.clone(), run.head.b.value.clone())],
    };
    Ok(FineTuned {
        head,
        overrides: run.model.overrides()?,
        best_epoch,
        history,
        dev_scores,
    })
}

impl<'a> Run<'a> {
    /// Load the trainable encoder and tokenize every example once.
    fn prepare(
        dir: &ModelDir,
        train: &'a [Example],
        dev: &'a [Example],
        options: &'a FineTuneOptions,
    ) -> Result<Self> {
        let config = &dir.config;
        let tokenizer = SentenceTokenizer::from_model_dir(
            &dir.path,
            Some(dir.pad_id()),
            dir.profile.max_length,
        )?;
        let pre = Preprocessor::new(dir.profile.preprocessing, dir.profile.prefix.clone());
        let examples: Vec<&Example> = train.iter().chain(dev).collect();
        let all: Vec<Example> = examples.iter().map(|e| (*e).clone()).collect();
        let labels = label_set(&all, options.labels.as_ref())?;
        let label_index: Vec<usize> = examples
            .iter()
            .map(|e| labels.index(&e.label).unwrap_or(0))
            .collect();
        let mut inputs: Vec<String> = examples.iter().map(|e| pre.apply(&e.text)).collect();
        let previous = previous_positions(&examples, &mut inputs, &pre);
        let tokens = tokenizer
            .encode(&inputs)?
            .into_iter()
            .map(|t| t.ids)
            .collect();
        let word = match &dir.weights {
            WeightsFile::Safetensors(p) => SafetensorsFiles::open(&[p.as_path()])?
                .read_f16(&[
                    "embeddings.word_embeddings.weight",
                    "bert.embeddings.word_embeddings.weight",
                ])?
                .map(|(_, values)| values),
            WeightsFile::PytorchBin(_) => None,
        };
        let vb = weights_builder(dir, None, &Device::Cpu)?;
        let layers = config.num_hidden_layers;
        let first_trainable = layers - options.layers.clamp(1, layers);
        let mut rng = SplitMix64::new(options.seed);
        let lora = LoraShape {
            rank: options.rank.max(1),
            alpha: options.alpha,
            precision: options.precision,
        };
        let model = TuneModel::load(vb, config, word, first_trainable, lora, &mut rng)?;
        let cue_spec = FeatureSpec {
            embedding_dim: 0,
            cues: options.cues,
            context: options.context,
            context_embedding: false,
        };
        let cue_rows = examples
            .iter()
            .map(|e| features(&[], &e.text, e.previous.as_deref(), None, &cue_spec))
            .collect();
        let k = labels.len();
        let mut counts = vec![0usize; k];
        for &i in &label_index[..train.len()] {
            counts[i] += 1;
        }
        let present = counts.iter().filter(|&&c| c > 0).count().max(1) as f32;
        let class_weights = counts
            .iter()
            .map(|&c| {
                if c == 0 {
                    1.0
                } else {
                    train.len() as f32 / (present * c as f32)
                }
            })
            .collect();
        let context_width = if options.context_embedding {
            model.hidden() + 1
        } else {
            0
        };
        let width = model.hidden() + cue_spec.len() + context_width;
        Ok(Self {
            model,
            head: TrainHead {
                w: Param::new(vec![0.0; k * width], true),
                b: Param::new(vec![0.0; k], false),
                mean: vec![0.0; width],
                scale: vec![1.0; width],
            },
            tokens,
            cue_rows,
            previous,
            examples,
            labels,
            label_index,
            class_weights,
            pooling: dir.profile.pooling,
            normalize: dir.profile.normalize,
            options,
        })
    }

    /// The head's features (pooled vector, cues, context) of `idx`,
    /// unstandardized.
    fn features(&self, idx: &[usize]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(idx.len());
        for chunk in idx.chunks(64) {
            let members = self.with_previous(chunk);
            let batch: Vec<&[u32]> = members.iter().map(|&i| self.tokens[i].as_slice()).collect();
            let (x, offsets) = self.model.embed(&batch)?;
            let (states, _) = self.model.forward(x, &offsets, false);
            let pooled: Vec<Vec<f32>> = offsets
                .iter()
                .map(|&(start, len)| self.pool(&states, start, len).0)
                .collect();
            for (k, &i) in chunk.iter().enumerate() {
                out.push(self.feature_row(i, &pooled[k], |p| {
                    members.iter().position(|&m| m == p).map(|q| &pooled[q][..])
                }));
            }
        }
        Ok(out)
    }

    /// `chunk`, then the previous units its members need that it lacks.
    fn with_previous(&self, chunk: &[usize]) -> Vec<usize> {
        let mut members = chunk.to_vec();
        if self.options.context_embedding {
            for &i in chunk {
                if let Some(p) = self.previous[i] {
                    if !members.contains(&p) {
                        members.push(p);
                    }
                }
            }
        }
        members
    }

    /// One example's features from its pooled vector; `pooled_of` finds the
    /// pooled vector of a unit of the batch by its index in `tokens`.
    fn feature_row<'v>(
        &self,
        i: usize,
        unit: &[f32],
        pooled_of: impl Fn(usize) -> Option<&'v [f32]>,
    ) -> Vec<f32> {
        let mut f = unit.to_vec();
        f.extend_from_slice(&self.cue_rows[i]);
        if self.options.context_embedding {
            let previous = self.previous[i].and_then(pooled_of);
            f.extend(previous_vector_features(previous, unit.len()));
        }
        f
    }

    /// Start from the head fitted on the base model's features: a good
    /// point to fine-tune from, and the standardization the head keeps.
    fn init_head(&mut self, dir: &ModelDir, train_idx: &[usize]) -> Result<Head> {
        let rows = self.features(train_idx)?;
        let labels: Vec<Label> = train_idx
            .iter()
            .map(|&i| self.examples[i].label.clone())
            .collect();
        let spec = head_spec(
            self.labels.clone(),
            &dir.profile.id,
            &dir.profile.revision,
            dir.profile.pooling,
            FeatureSpec {
                embedding_dim: self.model.hidden(),
                cues: self.options.cues,
                context: self.options.context,
                context_embedding: self.options.context_embedding,
            },
            HeadKind::Softmax,
        );
        let init = train_head(&rows, &labels, spec, &TrainOptions::default())?;
        let (w, b) = &init.layers[0];
        self.head.w.value.clone_from(w);
        self.head.b.value.clone_from(b);
        self.head.mean.clone_from(&init.feature_mean);
        self.head.scale.clone_from(&init.feature_scale);
        Ok(init)
    }

    /// Logits of standardized features.
    fn logits(&self, f: &[f32]) -> Vec<f32> {
        let width = f.len();
        (0..self.labels.len())
            .map(|c| {
                let row = &self.head.w.value[c * width..(c + 1) * width];
                self.head.b.value[c]
                    + row
                        .iter()
                        .zip(f)
                        .zip(self.head.mean.iter().zip(&self.head.scale))
                        .map(|((w, x), (m, s))| w * (x - m) * s)
                        .sum::<f32>()
            })
            .collect()
    }

    fn dev_scores(&self, dev_idx: &[usize]) -> Result<Vec<Scores>> {
        Ok(self
            .features(dev_idx)?
            .iter()
            .map(|f| Scores::from_logits(&self.labels, &self.logits(f)))
            .collect())
    }

    fn dev_macro_f1(&self, dev_idx: &[usize]) -> Result<f64> {
        let items: Vec<_> = dev_idx
            .iter()
            .zip(self.dev_scores(dev_idx)?)
            .map(|(&i, s)| {
                let e = self.examples[i];
                (e.label.clone(), e.alt.clone(), s.best())
            })
            .collect();
        Ok(metrics(&items, self.labels.labels(), 1).macro_f1.value)
    }

    /// One pass over the training examples in a seeded order; returns the mean loss.
    fn train_epoch(
        &mut self,
        train_idx: &[usize],
        rng: &mut SplitMix64,
        step: &mut usize,
        total_steps: usize,
    ) -> Result<f64> {
        let order = if self.options.context_embedding {
            self.shuffled_runs(train_idx, rng)
        } else {
            let mut order = train_idx.to_vec();
            for k in (1..order.len()).rev() {
                order.swap(k, rng.below(k + 1));
            }
            order
        };
        let (mut loss_sum, mut batches) = (0.0, 0);
        for chunk in order.chunks(self.options.batch_size.max(1)) {
            *step += 1;
            loss_sum += self.train_step(chunk, *step, total_steps)?;
            batches += 1;
        }
        Ok(loss_sum / batches.max(1) as f64)
    }

    /// Forward, backward and one AdamW step on one batch.
    fn train_step(&mut self, chunk: &[usize], step: usize, total_steps: usize) -> Result<f64> {
        let h = self.model.hidden();
        // The batch's units, then the previous units they read as context:
        // gradients reach those encodings too.
        let members = self.with_previous(chunk);
        let batch: Vec<&[u32]> = members.iter().map(|&i| self.tokens[i].as_slice()).collect();
        let (x, offsets) = self.model.embed(&batch)?;
        let (states, caches) = self.model.forward(x, &offsets, true);
        let pooled: Vec<(Vec<f32>, f32)> = offsets
            .iter()
            .map(|&(start, len)| self.pool(&states, start, len))
            .collect();
        let mut dpooled_of: Vec<Vec<f32>> = vec![vec![0f32; h]; members.len()];
        let context_start = h + self.cue_rows.first().map_or(0, Vec::len);
        let weight_sum: f32 = chunk
            .iter()
            .map(|&i| self.class_weights[self.label_index[i]])
            .sum();
        let mut dstates = vec![0f32; states.len()];
        let mut loss = 0f64;
        for (k, &i) in chunk.iter().enumerate() {
            let previous_at = self.previous[i]
                .filter(|_| self.options.context_embedding)
                .and_then(|p| members.iter().position(|&m| m == p));
            let f = self.feature_row(i, &pooled[k].0, |_| {
                previous_at.map(|q| pooled[q].0.as_slice())
            });
            let scores = Scores::from_logits(&self.labels, &self.logits(&f));
            let p = scores.probabilities();
            let y = self.label_index[i];
            let w = self.class_weights[y] / weight_sum;
            loss -= (w * p[y].max(1e-12).ln()) as f64;
            // d loss / d logits = w · (p − onehot).
            let dlogits: Vec<f32> = (0..p.len())
                .map(|c| w * (p[c] - if c == y { 1.0 } else { 0.0 }))
                .collect();
            let width = f.len();
            for (c, dl) in dlogits.iter().enumerate() {
                self.head.b.grad[c] += dl;
                let row = &mut self.head.w.grad[c * width..(c + 1) * width];
                for j in 0..width {
                    let z = (f[j] - self.head.mean[j]) * self.head.scale[j];
                    row[j] += dl * z;
                }
                let wrow = &self.head.w.value[c * width..(c + 1) * width];
                let scale = &self.head.scale;
                for (j, d) in dpooled_of[k].iter_mut().enumerate() {
                    *d += dl * wrow[j] * scale[j];
                }
                if let Some(q) = previous_at {
                    for (j, d) in dpooled_of[q].iter_mut().enumerate() {
                        let at = context_start + j;
                        *d += dl * wrow[at] * scale[at];
                    }
                }
            }
        }
        for ((&(start, len), (unit, norm)), dunit) in offsets.iter().zip(&pooled).zip(dpooled_of) {
            // Through the L2 normalization, then the pooling.
            let dpooled: Vec<f32> = if self.normalize {
                let dot: f32 = dunit.iter().zip(unit).map(|(a, b)| a * b).sum();
                dunit
                    .iter()
                    .zip(unit)
                    .map(|(d, u)| (d - u * dot) / norm)
                    .collect()
            } else {
                dunit
            };
            match self.pooling {
                Pooling::Mean => {
                    let share: Vec<f32> = dpooled.iter().map(|d| d / len as f32).collect();
                    for row in dstates[start * h..(start + len) * h].chunks_exact_mut(h) {
                        row.copy_from_slice(&share);
                    }
                }
                Pooling::Cls if len > 0 => {
                    dstates[start * h..(start + 1) * h].copy_from_slice(&dpooled)
                }
                Pooling::Cls => {}
            }
        }
        self.model.backward(dstates, caches, &offsets);
        let o = self.options;
        let warm = ((total_steps as f64) * o.warmup).max(1.0);
        let factor = if (step as f64) < warm {
            step as f64 / warm
        } else {
            ((total_steps - step.min(total_steps)) as f64 / (total_steps as f64 - warm).max(1.0))
                .max(0.0)
        } as f32;
        let t = step as i32;
        let (wd, lr_enc, lr_head) = (
            o.weight_decay as f32,
            o.lr_encoder as f32 * factor,
            o.lr_head as f32 * factor,
        );
        self.model.params_mut().into_par_iter().for_each(|p| {
            p.adamw(lr_enc, wd, t);
            p.zero_grad();
        });
        for p in [&mut self.head.w, &mut self.head.b] {
            p.adamw(lr_head, wd, t);
            p.zero_grad();
        }
        Ok(loss)
    }

    /// `train_idx` in runs of consecutive units of a text (so that most
    /// units' previous units share their batch), the runs in a seeded order.
    fn shuffled_runs(&self, train_idx: &[usize], rng: &mut SplitMix64) -> Vec<usize> {
        const RUN: usize = 4;
        let mut runs: Vec<Vec<usize>> = Vec::new();
        for &i in train_idx {
            match runs.last_mut() {
                Some(run)
                    if run.len() < RUN
                        && run.last().is_some_and(|&l| self.previous[i] == Some(l)) =>
                {
                    run.push(i)
                }
                _ => runs.push(vec![i]),
            }
        }
        for k in (1..runs.len()).rev() {
            runs.swap(k, rng.below(k + 1));
        }
        runs.concat()
    }

    /// A sentence's vector as inference pools it ([`crate::encode::pooling`]),
    /// and its norm before normalizing.
    fn pool(&self, states: &[f32], start: usize, len: usize) -> (Vec<f32>, f32) {
        let h = self.model.hidden();
        let mut v = pool(
            &states[start * h..(start + len) * h],
            h,
            &[len],
            self.pooling,
            false,
        )
        .pop()
        .unwrap_or_default();
        let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        if self.normalize {
            v.iter_mut().for_each(|a| *a /= norm);
        }
        (v, norm)
    }

    /// Copies of every trainable tensor (encoder, then head).
    fn snapshot(&mut self) -> Vec<Vec<f32>> {
        let mut v: Vec<Vec<f32>> = self
            .model
            .params_mut()
            .iter()
            .map(|p| p.value.clone())
            .collect();
        v.push(self.head.w.value.clone());
        v.push(self.head.b.value.clone());
        v
    }

    fn restore(&mut self, mut values: Vec<Vec<f32>>) {
        let b = values.pop().unwrap_or_default();
        let w = values.pop().unwrap_or_default();
        self.head.b.value = b;
        self.head.w.value = w;
        for (p, v) in self.model.params_mut().into_iter().zip(values) {
            p.value = v;
        }
    }
}

/// `examples` with about `share` of them, chosen by `seed`, rewritten in
/// web spellings; a rewritten unit is also the next unit's `previous`, so
/// runs of consecutive units stay linked.
fn respell_share(examples: &[Example], share: f64, seed: u64) -> Vec<Example> {
    let mut rng = SplitMix64::new(seed ^ 0x5be1_1ed0);
    let mut out: Vec<Example> = examples.to_vec();
    if share <= 0.0 {
        return out;
    }
    for i in 0..out.len() {
        if rng.unit() < share {
            out[i].text = web_spelling(&examples[i].text, &mut rng);
        }
        if i > 0 && examples[i].follows(&examples[i - 1]) {
            out[i].previous = Some(out[i - 1].text.clone());
        }
    }
    out
}

/// Where each example's previous unit is among `inputs` (the examples'
/// preprocessed texts): the example before it when that is its previous
/// unit, else a context-only input appended here.
fn previous_positions(
    examples: &[&Example],
    inputs: &mut Vec<String>,
    pre: &Preprocessor,
) -> Vec<Option<usize>> {
    let mut appended: HashMap<String, usize> = HashMap::new();
    (0..examples.len())
        .map(|i| {
            let text = examples[i].previous.as_deref()?;
            if i.checked_sub(1)
                .is_some_and(|j| examples[i].follows(examples[j]))
            {
                return Some(i - 1);
            }
            Some(*appended.entry(text.to_string()).or_insert_with(|| {
                inputs.push(pre.apply(text));
                inputs.len() - 1
            }))
        })
        .collect()
}

/// Save a fine-tuned head: `head.*` plus the override file, all atomically.
pub fn save(tuned: &FineTuned, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| MawqifError::io(dir, e))?;
    save_safetensors(&tuned.overrides, &dir.join(ENCODER_OVERRIDE_FILE))?;
    tuned.head.save(dir)
}
