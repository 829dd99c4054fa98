//! Stage 5: turn sentence vectors into label probabilities.
//!
//! Contract: a [`Head`] maps one feature vector (pooled encoder output,
//! optionally followed by the transparent cue features of [`cues`] and by
//! the previous unit's cues or pooled vector: see [`features`]) to a
//! probability for each label of its own set
//! (`head.json`'s `labels`; the four stance labels by default), summing to 1.
//! A head is stored as `head.safetensors` (tensors) + `head.json`
//! ([`HeadSpec`]).

pub mod cues;
pub mod features;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{MawqifError, Result};
use crate::files::write_atomic;
use crate::label::{LabelSet, Scores};
use crate::model::e5s1::save_safetensors;
use crate::model::Pooling;

pub use features::{features, FeatureSpec};

/// `head.json`: what the head was trained on and how to feed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadSpec {
    pub format: String,
    /// The head's outputs, in order (any scheme of two or more labels).
    pub labels: LabelSet,
    pub encoder_id: String,
    pub encoder_revision: String,
    pub pooling: Pooling,
    pub features: FeatureSpec,
    /// Width of the hidden layer (ReLU), or None for a linear head.
    pub hidden: Option<usize>,
    /// Safetensors file in the head directory with fine-tuned encoder layers
    /// that replace the base model's tensors of the same names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_override: Option<String>,
    /// Free-form provenance: data, seed, metrics.
    #[serde(default)]
    pub training: serde_json::Value,
}

pub const HEAD_FORMAT: &str = "mawqif-head/1";

impl HeadSpec {
    /// The spec of a head not yet trained: no encoder override, no provenance.
    pub fn new(
        labels: LabelSet,
        encoder_id: &str,
        encoder_revision: &str,
        pooling: Pooling,
        features: FeatureSpec,
        hidden: Option<usize>,
    ) -> Self {
        Self {
            format: HEAD_FORMAT.into(),
            labels,
            encoder_id: encoder_id.into(),
            encoder_revision: encoder_revision.into(),
            pooling,
            features,
            hidden,
            encoder_override: None,
            training: serde_json::Value::Null,
        }
    }

    /// A linear head over `embedding_dim` vector features, without cues.
    #[cfg(test)]
    pub(crate) fn for_tests(labels: LabelSet, embedding_dim: usize) -> Self {
        Self::new(
            labels,
            "test",
            "r",
            Pooling::Mean,
            FeatureSpec::plain(embedding_dim),
            None,
        )
    }
}

/// A linear or one-hidden-layer classifier over standardized features.
#[derive(Debug, Clone)]
pub struct Head {
    pub spec: HeadSpec,
    /// Per-feature mean and scale applied before the first layer.
    pub feature_mean: Vec<f32>,
    pub feature_scale: Vec<f32>,
    /// Layers as (weight [out][in] row-major, bias [out]).
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Head {
    pub fn load(dir: &Path) -> Result<Self> {
        let json_path = dir.join("head.json");
        let st_path = dir.join("head.safetensors");
        let text = std::fs::read_to_string(&json_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => MawqifError::MissingFile {
                path: json_path.clone(),
                hint: "no classifier head here; pass --head DIR or train one with `mawqif train`"
                    .into(),
            },
            _ => MawqifError::io(&json_path, e),
        })?;
        let raw: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| MawqifError::malformed(&json_path, e.to_string()))?;
        let spec: HeadSpec = serde_json::from_value(raw.clone())
            .map_err(|e| MawqifError::malformed(&json_path, e.to_string()))?;
        check_companions(dir, &json_path, &raw, &spec)?;
        if spec.format != HEAD_FORMAT {
            return Err(MawqifError::malformed(
                &json_path,
                format!("format {:?}, expected {HEAD_FORMAT:?}", spec.format),
            ));
        }
        let tensors = candle_core::safetensors::load(&st_path, &Device::Cpu).map_err(|e| {
            if st_path.exists() {
                MawqifError::malformed(&st_path, e.to_string())
            } else {
                MawqifError::MissingFile {
                    path: st_path.clone(),
                    hint: "head.json needs its head.safetensors beside it".into(),
                }
            }
        })?;
        let vec1 = |name: &str, len: usize| -> Result<Vec<f32>> {
            let t = tensors
                .get(name)
                .ok_or_else(|| MawqifError::malformed(&st_path, format!("no tensor {name}")))?;
            let v = t
                .flatten_all()
                .and_then(|t| t.to_dtype(candle_core::DType::F32))
                .and_then(|t| t.to_vec1::<f32>())?;
            if v.len() != len {
                return Err(MawqifError::malformed(
                    &st_path,
                    format!("tensor {name} has {} values, expected {len}", v.len()),
                ));
            }
            Ok(v)
        };
        let n_in = spec.features.len();
        let mut dims = vec![n_in];
        if let Some(h) = spec.hidden {
            dims.push(h);
        }
        dims.push(spec.labels.len());
        let mut layers = Vec::new();
        for k in 0..dims.len() - 1 {
            let w = vec1(&format!("layers.{k}.weight"), dims[k + 1] * dims[k])?;
            let b = vec1(&format!("layers.{k}.bias"), dims[k + 1])?;
            layers.push((w, b));
        }
        Ok(Self {
            feature_mean: vec1("feature_mean", n_in)?,
            feature_scale: vec1("feature_scale", n_in)?,
            layers,
            spec,
        })
    }

    /// Write `head.safetensors` and `head.json` into `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| MawqifError::io(dir, e))?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        let n_in = self.spec.features.len();
        let put = |t: &mut HashMap<String, Tensor>, name: String, v: &[f32]| -> Result<()> {
            t.insert(name, Tensor::from_slice(v, v.len(), &Device::Cpu)?);
            Ok(())
        };
        put(&mut tensors, "feature_mean".into(), &self.feature_mean)?;
        put(&mut tensors, "feature_scale".into(), &self.feature_scale)?;
        let mut fan_in = n_in;
        for (k, (w, b)) in self.layers.iter().enumerate() {
            let out = b.len();
            tensors.insert(
                format!("layers.{k}.weight"),
                Tensor::from_slice(w, (out, fan_in), &Device::Cpu)?,
            );
            put(&mut tensors, format!("layers.{k}.bias"), b)?;
            fan_in = out;
        }
        save_safetensors(&tensors, &dir.join("head.safetensors"))?;
        // head.json goes last and records the hash of each file beside it: a
        // save cut short (killed between two renames) leaves a pair that
        // `load` refuses instead of mixing an old file with a new one.
        let mut json = serde_json::to_value(&self.spec)?;
        let mut files = serde_json::Map::new();
        for name in companion_files(&self.spec) {
            files.insert(name.to_string(), sha256_file(&dir.join(name))?.into());
        }
        if let Some(object) = json.as_object_mut() {
            object.insert(COMPANION_HASHES.into(), files.into());
        }
        let json = serde_json::to_string_pretty(&json)?;
        write_atomic(&dir.join("head.json"), format!("{json}\n").as_bytes())?;
        Ok(())
    }

    /// Probabilities for one feature vector of length `spec.features.len()`.
    pub fn predict(&self, features: &[f32]) -> Scores {
        let mut x: Vec<f32> = features
            .iter()
            .zip(self.feature_mean.iter().zip(&self.feature_scale))
            .map(|(&v, (&m, &s))| (v - m) * s)
            .collect();
        let last = self.layers.len().saturating_sub(1);
        for (k, (w, b)) in self.layers.iter().enumerate() {
            let n_in = x.len();
            let mut y: Vec<f32> = b.clone();
            for (o, yo) in y.iter_mut().enumerate() {
                let row = &w[o * n_in..(o + 1) * n_in];
                *yo += row.iter().zip(&x).map(|(a, b)| a * b).sum::<f32>();
            }
            if k < last {
                y.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            x = y;
        }
        Scores::from_logits(&self.spec.labels, &x)
    }

    /// Check that this head can read vectors of `dim` from encoder `id`.
    pub fn check_encoder(&self, dir: &Path, dim: usize, pooling: Pooling) -> Result<()> {
        if self.spec.features.embedding_dim != dim {
            return Err(MawqifError::HeadMismatch {
                path: dir.to_path_buf(),
                reason: format!(
                    "the head reads {}-dim vectors but the encoder gives {dim}",
                    self.spec.features.embedding_dim
                ),
            });
        }
        if self.spec.pooling != pooling {
            return Err(MawqifError::HeadMismatch {
                path: dir.to_path_buf(),
                reason: format!(
                    "the head was trained on {:?} pooling but the model uses {:?}",
                    self.spec.pooling, pooling
                ),
            });
        }
        Ok(())
    }
}

/// The key of head.json that maps each companion file to its sha256.
const COMPANION_HASHES: &str = "files";

/// The files a head's head.json vouches for.
fn companion_files(spec: &HeadSpec) -> Vec<&str> {
    let mut names = vec!["head.safetensors"];
    names.extend(spec.encoder_override.as_deref());
    names
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|e| MawqifError::io(path, e))?;
    Ok(sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Check the hashes head.json records (heads saved before they were recorded
/// have none, and load as they are).
fn check_companions(
    dir: &Path,
    json_path: &Path,
    raw: &serde_json::Value,
    spec: &HeadSpec,
) -> Result<()> {
    let Some(recorded) = raw.get(COMPANION_HASHES) else {
        return Ok(());
    };
    let recorded = recorded.as_object().ok_or_else(|| {
        MawqifError::malformed(json_path, format!("`{COMPANION_HASHES}` is not an object"))
    })?;
    for name in companion_files(spec) {
        let Some(want) = recorded.get(name).and_then(|h| h.as_str()) else {
            return Err(MawqifError::malformed(
                json_path,
                format!("no hash recorded for {name}"),
            ));
        };
        let path = dir.join(name);
        if !path.is_file() {
            return Err(MawqifError::MissingFile {
                path,
                hint: "head.json needs it beside it; train the head again".into(),
            });
        }
        if sha256_file(&path)? != want {
            return Err(MawqifError::malformed(
                &path,
                "it is not the file head.json was saved with (an interrupted save, or \
                 an edit); train the head again",
            ));
        }
    }
    Ok(())
}

/// Where a model's default head lives: `models/heads/<encoder dir name>/`.
pub fn default_head_dir(models_root: &Path, encoder_id: &str) -> PathBuf {
    let name = encoder_id.rsplit('/').next().unwrap_or(encoder_id);
    models_root.join("heads").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::label::{Label, Stance};

    #[test]
    fn head_save_load_predict() {
        let dir = tempfile::tempdir().unwrap();
        let spec = HeadSpec::for_tests(LabelSet::stance(), 2);
        let head = Head {
            spec,
            feature_mean: vec![0.0, 0.0],
            feature_scale: vec![1.0, 1.0],
            layers: vec![(vec![1., 0., 0., 1., -1., 0., 0., -1.], vec![0.; 4])],
        };
        head.save(dir.path()).unwrap();
        let back = Head::load(dir.path()).unwrap();
        assert_eq!(back.predict(&[0.0, 5.0]).best(), Stance::Quotation.label());
        assert_eq!(
            back.predict(&[-5.0, 0.0]).best(),
            Stance::Endorsement.label()
        );
        assert!(back.check_encoder(dir.path(), 3, Pooling::Mean).is_err());

        // A save killed between its two renames: new tensors, old head.json.
        let old_json = std::fs::read(dir.path().join("head.json")).unwrap();
        let mut changed = head.clone();
        changed.layers[0].1[0] = 1.0;
        changed.save(dir.path()).unwrap();
        std::fs::write(dir.path().join("head.json"), &old_json).unwrap();
        let err = Head::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("head.safetensors") && err.contains("interrupted save"),
            "{err}"
        );
        // A head.json without recorded hashes (older heads) still loads.
        let mut plain: serde_json::Value = serde_json::from_slice(&old_json).unwrap();
        plain.as_object_mut().unwrap().remove(COMPANION_HASHES);
        std::fs::write(dir.path().join("head.json"), plain.to_string()).unwrap();
        assert!(Head::load(dir.path()).is_ok());
    }

    #[test]
    fn a_head_of_two_labels_round_trips_and_a_one_label_head_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let labels = LabelSet::parse("OBJ,SUBJ").unwrap();
        let head = Head {
            spec: HeadSpec::for_tests(labels.clone(), 1),
            feature_mean: vec![0.0],
            feature_scale: vec![1.0],
            layers: vec![(vec![-1., 1.], vec![0.; 2])],
        };
        head.save(dir.path()).unwrap();
        let back = Head::load(dir.path()).unwrap();
        assert_eq!(back.spec.labels, labels);
        assert_eq!(back.predict(&[3.0]).best(), Label::new("SUBJ").unwrap());
        assert_eq!(back.predict(&[-3.0]).best(), Label::new("OBJ").unwrap());
        let json = std::fs::read_to_string(dir.path().join("head.json")).unwrap();
        std::fs::write(dir.path().join("head.json"), json.replace("\"OBJ\",", "")).unwrap();
        assert!(Head::load(dir.path()).is_err());
    }
}
