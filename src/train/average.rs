//! Averaging fine-tuned runs into one model of the same size and speed.
//!
//! Contract: [`average_runs`] takes two or more [`TrainedRun`]s that differ
//! only in the seed of their initialisation and example order (same data,
//! split, encoder, labels and features) and returns one run whose encoder
//! update is the mean of theirs and whose head is the mean of their heads.
//! Biases, norms and head weights are averaged entry by entry, each head
//! first rewritten, exactly, in the first run's feature standardization
//! (which differs a little when training texts were respelled). A LoRA update
//! `B·A` is not linear in its factors, so the factors are stacked instead:
//! `[B₁/n … Bₙ/n] · [A₁; …; Aₙ] = (B₁A₁ + … + BₙAₙ)/n` exactly, at n times the
//! rank (the loader merges it into the weight, so inference costs the same).
//! Runs from one starting point stay close to it, which is what makes the
//! mean of their weights a good model (a "model soup"); the mean damps the
//! run-to-run flips of borderline sentences.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{MawqifError, Result};
use crate::head::Head;

use super::finetune::ENCODER_OVERRIDE_FILE;

/// One training run as saved: its head and the encoder tensors it changed
/// (empty for a frozen-encoder head).
#[derive(Debug, Clone)]
pub struct TrainedRun {
    pub head: Head,
    pub overrides: HashMap<String, Tensor>,
}

impl TrainedRun {
    /// Load the head in `dir` and, when it names one, its encoder override.
    pub fn load(dir: &Path) -> Result<Self> {
        let head = Head::load(dir)?;
        let overrides = match &head.spec.encoder_override {
            Some(name) => {
                let path = dir.join(name);
                candle_core::safetensors::load(&path, &Device::Cpu)
                    .map_err(|e| MawqifError::malformed(&path, e.to_string()))?
            }
            None => HashMap::new(),
        };
        Ok(Self { head, overrides })
    }

    /// Write the head and its override (if any) into `dir`, override first:
    /// head.json, written last, vouches for both.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| MawqifError::io(dir, e))?;
        if !self.overrides.is_empty() {
            crate::model::e5s1::save_safetensors(
                &self.overrides,
                &dir.join(ENCODER_OVERRIDE_FILE),
            )?;
        }
        self.head.save(dir)
    }
}

/// The mean of `runs` (see the module docs). `training` is recorded as the
/// result's `head.json` provenance.
pub fn average_runs(runs: &[TrainedRun], training: serde_json::Value) -> Result<TrainedRun> {
    let [first, rest @ ..] = runs else {
        return Err(refuse("no runs given"));
    };
    if rest.is_empty() {
        return Err(refuse("one run given; averaging needs two or more"));
    }
    check_compatible(first, rest)?;
    let n = runs.len() as f32;
    let mut head = first.head.clone();
    for (which, run) in rest.iter().enumerate() {
        let (w2, b2) = restandardized(&run.head, &first.head).ok_or_else(|| {
            refuse(format!(
                "run {} has a varying feature that is constant in run 1, so its head cannot be \
                 expressed in run 1's standardization",
                which + 2
            ))
        })?;
        if let Some((w, b)) = head.layers.first_mut() {
            w.iter_mut().zip(&w2).for_each(|(x, y)| *x += y);
            b.iter_mut().zip(&b2).for_each(|(x, y)| *x += y);
        }
    }
    for (w, b) in head.layers.iter_mut() {
        w.iter_mut().chain(b.iter_mut()).for_each(|x| *x /= n);
    }
    head.spec.training = training;

    let mut overrides = HashMap::new();
    for (name, tensor) in &first.overrides {
        let parts: Vec<&Tensor> = runs.iter().map(|r| &r.overrides[name]).collect();
        let dtype = tensor.dtype();
        let f32s = parts
            .iter()
            .map(|t| t.to_dtype(DType::F32))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let averaged = if name.ends_with(".lora_a") {
            Tensor::cat(&f32s, 0)?
        } else if name.ends_with(".lora_b") {
            (Tensor::cat(&f32s, 1)? / n as f64)?
        } else {
            let mut sum = f32s[0].clone();
            for t in &f32s[1..] {
                sum = (sum + t)?;
            }
            (sum / n as f64)?
        };
        overrides.insert(name.clone(), averaged.to_dtype(dtype)?);
    }
    Ok(TrainedRun { head, overrides })
}

/// `run`'s linear layer rewritten for `reference`'s feature standardization,
/// giving the same logits for every input. Runs whose training texts were
/// respelled (`--web-spelling`) standardize slightly differently; their
/// layers are only comparable, and so averageable, in one standardization.
/// None where `reference` has a zero scale on a feature `run` uses.
fn restandardized(run: &Head, reference: &Head) -> Option<(Vec<f32>, Vec<f32>)> {
    let (w, b) = run.layers.first()?;
    let n_in = run.feature_mean.len();
    let mut w_out = w.clone();
    let mut b_out = b.clone();
    for (row, bias) in w_out.chunks_mut(n_in).zip(b_out.iter_mut()) {
        for (j, weight) in row.iter_mut().enumerate() {
            // w·s·(v − m) = w'·s₁·(v − m₁) for all v: w' = w·s/s₁, and the
            // bias absorbs w·s·(m₁ − m).
            let (m, scale) = (run.feature_mean[j], run.feature_scale[j]);
            let (m1, scale1) = (reference.feature_mean[j], reference.feature_scale[j]);
            let weighted = *weight * scale;
            *bias += weighted * (m1 - m);
            *weight = if scale1 != 0.0 {
                weighted / scale1
            } else if weighted == 0.0 {
                0.0
            } else {
                return None;
            };
        }
    }
    Some((w_out, b_out))
}

fn refuse(reason: impl Into<String>) -> MawqifError {
    MawqifError::RunsNotAveragable(reason.into())
}

/// Same encoder, labels, features, linear head, standardization and
/// override tensors (names and shapes): otherwise a mean means nothing.
fn check_compatible(first: &TrainedRun, rest: &[TrainedRun]) -> Result<()> {
    let a = &first.head;
    if a.spec.hidden.is_some() {
        return Err(refuse(
            "MLP heads cannot be averaged (their hidden units are in no common order); \
             train linear heads (the default --head-type softmax)",
        ));
    }
    for (k, run) in rest.iter().enumerate() {
        let b = &run.head;
        let which = k + 2;
        let same_spec = a.spec.labels == b.spec.labels
            && a.spec.encoder_id == b.spec.encoder_id
            && a.spec.encoder_revision == b.spec.encoder_revision
            && a.spec.pooling == b.spec.pooling
            && a.spec.features == b.spec.features
            && a.spec.hidden == b.spec.hidden;
        if !same_spec {
            return Err(refuse(format!(
                "run {which} differs from run 1 in its encoder, labels, pooling, features or \
                 head type"
            )));
        }
        // The same data and split, as recorded by `mawqif train`; the
        // standardization itself may differ a little (see `restandardized`).
        // An averaged head records its runs under `average_of`.
        let provenance = |h: &Head| {
            let t = &h.spec.training;
            let run = t
                .get("average_of")
                .and_then(|runs| runs.get(0))
                .unwrap_or(t);
            ["data", "seed", "dev_fraction", "sentences"].map(|k| run.get(k).cloned())
        };
        if provenance(a) != provenance(b) || a.feature_mean.len() != b.feature_mean.len() {
            return Err(refuse(format!(
                "run {which} was trained on other data or another split than run 1 (use the \
                 same --data and --seed, and vary --run-seed)"
            )));
        }
        let mut names_a: Vec<&String> = first.overrides.keys().collect();
        let mut names_b: Vec<&String> = run.overrides.keys().collect();
        names_a.sort();
        names_b.sort();
        if names_a != names_b {
            return Err(refuse(format!(
                "run {which} changed other encoder tensors than run 1 (a different \
                 --fine-tune-layers, or one run is not fine-tuned)"
            )));
        }
        for (name, t) in &first.overrides {
            let u = &run.overrides[name];
            // LoRA factors may differ in rank (an averaged run averaged again);
            // the dimension they share with the weight must agree.
            let shared_dim = if name.ends_with(".lora_a") {
                Some(1)
            } else if name.ends_with(".lora_b") {
                Some(0)
            } else {
                None
            };
            let fits = match shared_dim {
                Some(d) => t.rank() == 2 && u.rank() == 2 && t.dims()[d] == u.dims()[d],
                None => t.dims() == u.dims(),
            };
            if !fits {
                return Err(refuse(format!(
                    "tensor {name} has shape {:?} in run 1 but {:?} in run {which}",
                    t.dims(),
                    u.dims()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::head::HeadSpec;
    use crate::label::LabelSet;

    fn head(weights: Vec<f32>, bias: Vec<f32>) -> Head {
        Head {
            spec: HeadSpec {
                encoder_override: Some(ENCODER_OVERRIDE_FILE.into()),
                ..HeadSpec::for_tests(LabelSet::parse("no,yes").unwrap(), 2)
            },
            feature_mean: vec![0.5, -0.5],
            feature_scale: vec![2.0, 1.0],
            layers: vec![(weights, bias)],
        }
    }

    fn tensor(values: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(values, shape, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F16))
            .unwrap()
    }

    /// A run with a rank-1 update of a 2×3 weight and a bias of 2.
    fn run(scale: f32) -> TrainedRun {
        let mut overrides = HashMap::new();
        overrides.insert("l.lora_a".to_string(), tensor(&[1.0, scale, -1.0], &[1, 3]));
        overrides.insert("l.lora_b".to_string(), tensor(&[scale, 2.0], &[2, 1]));
        overrides.insert("l.bias".to_string(), tensor(&[scale, -scale], &[2]));
        TrainedRun {
            head: head(vec![scale, 0.0, 1.0, -scale], vec![scale, 1.0]),
            overrides,
        }
    }

    fn matrix(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_dtype(DType::F32).unwrap().to_vec2().unwrap()
    }

    fn update(run: &TrainedRun) -> Vec<Vec<f32>> {
        let f = |name: &str| run.overrides[name].to_dtype(DType::F32).unwrap();
        matrix(&f("l.lora_b").matmul(&f("l.lora_a")).unwrap())
    }

    #[test]
    fn the_average_update_is_the_mean_of_the_updates() {
        let runs = [run(0.5), run(-1.5), run(3.0)];
        let avg = average_runs(&runs, serde_json::json!({"runs": 3})).unwrap();
        assert_eq!(avg.overrides["l.lora_a"].dims(), &[3, 3]);
        assert_eq!(avg.overrides["l.lora_b"].dims(), &[2, 3]);
        assert_eq!(avg.overrides["l.lora_a"].dtype(), DType::F16);
        let want: Vec<Vec<f32>> = (0..2)
            .map(|i| {
                (0..3)
                    .map(|j| runs.iter().map(|r| update(r)[i][j]).sum::<f32>() / 3.0)
                    .collect()
            })
            .collect();
        for (got, want) in update(&avg).iter().flatten().zip(want.iter().flatten()) {
            assert!((got - want).abs() < 1e-2, "{got} vs {want}");
        }
        let bias: Vec<f32> = avg.overrides["l.bias"]
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((bias[0] - 2.0 / 3.0).abs() < 1e-3, "{bias:?}");
        let (w, b) = &avg.head.layers[0];
        assert!((w[0] - 2.0 / 3.0).abs() < 1e-6 && (w[3] + 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(b[1], 1.0);
        assert_eq!(avg.head.spec.training["runs"], 3);
    }

    #[test]
    fn an_average_saves_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let avg = average_runs(&[run(1.0), run(2.0)], serde_json::Value::Null).unwrap();
        avg.save(dir.path()).unwrap();
        let back = TrainedRun::load(dir.path()).unwrap();
        assert_eq!(update(&back), update(&avg));
        assert_eq!(back.head.layers, avg.head.layers);
        // An average averages again (the stacked ranks differ: 2 and 1).
        let again = average_runs(&[back, run(3.0)], serde_json::Value::Null).unwrap();
        assert_eq!(again.overrides["l.lora_a"].dims(), &[3, 3]);
    }

    #[test]
    fn heads_standardized_differently_average_in_one_standardization() {
        let features = [[0.3f32, -2.0], [1.5, 4.0], [-0.7, 0.0]];
        let logits = |h: &Head, v: &[f32]| -> Vec<f32> {
            let x: Vec<f32> = v
                .iter()
                .zip(h.feature_mean.iter().zip(&h.feature_scale))
                .map(|(&v, (&m, &s))| (v - m) * s)
                .collect();
            let (w, b) = &h.layers[0];
            w.chunks(x.len())
                .zip(b)
                .map(|(row, b)| b + row.iter().zip(&x).map(|(p, q)| p * q).sum::<f32>())
                .collect()
        };
        let first = run(1.0);
        let mut second = run(-2.0);
        second.head.feature_mean = vec![0.1, 0.4];
        second.head.feature_scale = vec![0.5, 3.0];
        let (w, b) = restandardized(&second.head, &first.head).unwrap();
        let rewritten = Head {
            feature_mean: first.head.feature_mean.clone(),
            feature_scale: first.head.feature_scale.clone(),
            layers: vec![(w, b)],
            ..second.head.clone()
        };
        let mean = average_runs(&[first.clone(), second.clone()], serde_json::Value::Null).unwrap();
        for v in &features {
            let (l1, l2) = (logits(&first.head, v), logits(&second.head, v));
            for (k, got) in logits(&rewritten, v).iter().enumerate() {
                assert!((got - l2[k]).abs() < 1e-4, "{got} vs {}", l2[k]);
            }
            for (k, got) in logits(&mean.head, v).iter().enumerate() {
                let want = (l1[k] + l2[k]) / 2.0;
                assert!((got - want).abs() < 1e-4, "{got} vs {want}");
            }
        }
    }

    #[test]
    fn runs_that_do_not_match_are_refused() {
        let refused = |runs: &[TrainedRun], why: &str| {
            let err = average_runs(runs, serde_json::Value::Null)
                .expect_err("a refusal")
                .to_string();
            assert!(err.contains(why), "{err}");
        };
        refused(&[run(1.0)], "two or more");
        let mut other_labels = run(2.0);
        other_labels.head.spec.labels = LabelSet::parse("a,b").unwrap();
        refused(&[run(1.0), other_labels], "labels");
        let mut other_split = run(2.0);
        other_split.head.spec.training = serde_json::json!({"seed": 14});
        refused(
            &[run(1.0), other_split.clone()],
            "other data or another split",
        );
        // An average is compared through the runs it records.
        let mut averaged = run(1.0);
        averaged.head.spec.training = serde_json::json!({"average_of": [{"seed": 14}]});
        assert!(average_runs(&[averaged.clone(), other_split], serde_json::Value::Null).is_ok());
        refused(&[averaged, run(2.0)], "other data or another split");
        let mut fewer = run(2.0);
        fewer.overrides.remove("l.bias");
        refused(&[run(1.0), fewer], "other encoder tensors");
        let mut wider = run(2.0);
        wider
            .overrides
            .insert("l.lora_a".into(), tensor(&[1.0; 4], &[1, 4]));
        refused(&[run(1.0), wider], "l.lora_a");
        let mut mlp = run(1.0);
        mlp.head.spec.hidden = Some(4);
        refused(&[mlp.clone(), mlp], "MLP");
    }
}
