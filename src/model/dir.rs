//! A model directory in the Hugging Face layout, plus mawqif's own profile.
//!
//! Layout: `config.json`; `tokenizer.json` or `vocab.txt`; weights in
//! `model.safetensors` or `pytorch_model.bin`; optionally `mawqif.json`
//! (how to feed and pool this encoder: see [`ModelProfile`]).

use std::path::{Path, PathBuf};

use crate::error::{MawqifError, Result};
use crate::hub::snapshot_identity;
use candle_transformers::models::bert::Config as BertConfig;

use super::profile::{ModelProfile, PROFILE_FILE};
use super::registry::Registry;

/// Weight file formats mawqif reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsFile {
    Safetensors(PathBuf),
    PytorchBin(PathBuf),
}

impl WeightsFile {
    pub fn path(&self) -> &Path {
        match self {
            WeightsFile::Safetensors(p) | WeightsFile::PytorchBin(p) => p,
        }
    }
}

/// A validated model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub path: PathBuf,
    pub config: BertConfig,
    pub profile: ModelProfile,
    pub weights: WeightsFile,
}

impl ModelDir {
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            return Err(MawqifError::MissingModelDir {
                path: path.to_path_buf(),
            });
        }
        let config = read_config(&path.join("config.json"))?;
        let profile = read_profile(path, &config)?;
        let weights = find_weights(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
            profile,
            weights,
        })
    }

    /// The pad id from config.json, which the tokenizer may not declare.
    pub fn pad_id(&self) -> u32 {
        self.config.pad_token_id as u32
    }
}

fn read_config(path: &Path) -> Result<BertConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MawqifError::MissingFile {
                path: path.to_path_buf(),
                hint: "a model directory needs the encoder's config.json".into(),
            })
        }
        Err(e) => return Err(MawqifError::io(path, e)),
    };
    let config: BertConfig = serde_json::from_str(&text)
        .map_err(|e| MawqifError::malformed(path, format!("not a BERT config: {e}")))?;
    if config.hidden_size == 0
        || config.num_attention_heads == 0
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
    {
        return Err(MawqifError::malformed(
            path,
            format!(
                "hidden_size {} is not a positive multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            ),
        ));
    }
    Ok(config)
}

fn read_profile(dir: &Path, config: &BertConfig) -> Result<ModelProfile> {
    let path = dir.join(PROFILE_FILE);
    if !path.is_file() {
        if let Some(profile) = snapshot_profile(dir, config.max_position_embeddings) {
            return Ok(profile);
        }
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "local-model".into());
        return Ok(ModelProfile::plain(
            id,
            ModelProfile::local_revision(),
            config.max_position_embeddings,
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| MawqifError::io(&path, e))?;
    let mut profile: ModelProfile =
        serde_json::from_str(&text).map_err(|e| MawqifError::malformed(&path, e.to_string()))?;
    profile.max_length = profile.max_length.min(config.max_position_embeddings);
    Ok(profile)
}

fn find_weights(dir: &Path) -> Result<WeightsFile> {
    let st = dir.join("model.safetensors");
    if st.is_file() {
        return Ok(WeightsFile::Safetensors(st));
    }
    let bin = dir.join("pytorch_model.bin");
    if bin.is_file() {
        return Ok(WeightsFile::PytorchBin(bin));
    }
    Err(MawqifError::MissingFile {
        path: st,
        hint: format!(
            "no weights in {} (looked for model.safetensors and pytorch_model.bin)",
            dir.display()
        ),
    })
}

/// The profile of a hub snapshot: the registry's settings for known models,
/// plain defaults (mean pooling, no preprocessing) otherwise.
pub fn snapshot_profile(dir: &Path, max_positions: usize) -> Option<ModelProfile> {
    let (id, commit) = snapshot_identity(dir)?;
    Some(match Registry::builtin().get(&id) {
        Some(entry) => {
            let mut p = entry.profile(&commit);
            p.max_length = p.max_length.min(max_positions);
            p
        }
        None => ModelProfile::plain(id, commit, max_positions),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_snapshots_get_the_registry_profile() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let dir = PathBuf::from(format!("/c/hub/models--UBC-NLP--ARBERT/snapshots/{sha}"));
        let p = snapshot_profile(&dir, 512).unwrap();
        assert_eq!(p.id, "UBC-NLP/ARBERT");
        assert_eq!(p.revision, sha);
        let e5 = PathBuf::from(format!(
            "/c/hub/models--intfloat--multilingual-e5-small/snapshots/{sha}"
        ));
        assert_eq!(snapshot_profile(&e5, 512).unwrap().prefix, "query: ");
        let other = PathBuf::from(format!("/c/hub/models--some--bert/snapshots/{sha}"));
        let p = snapshot_profile(&other, 128).unwrap();
        assert_eq!((p.prefix.as_str(), p.max_length), ("", 128));
        assert!(snapshot_profile(Path::new("/models/multilingual-e5-small"), 512).is_none());
    }
}
