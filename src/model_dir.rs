//! A model directory in the Hugging Face layout, plus mawqif's own profile.
//!
//! Layout: `config.json`; `tokenizer.json` or `vocab.txt`; weights in
//! `model.safetensors` or `pytorch_model.bin`; optionally `mawqif.json`
//! (how to feed and pool this encoder: see [`ModelProfile`]).

use std::path::{Path, PathBuf};

use candle_transformers::models::bert::Config as BertConfig;
use serde::{Deserialize, Serialize};

use crate::error::{MawqifError, Result};
use crate::preprocess::Preprocessing;

/// How sentence vectors are pooled from the encoder's token states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over real tokens (attention mask), as e5 and sentence-transformers do.
    #[default]
    Mean,
    /// The first token's state, as BERT classifiers do.
    Cls,
}

/// What mawqif needs to know about an encoder beyond the HF files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// Hub id (or a local name) of the encoder; heads record it.
    pub id: String,
    #[serde(default = "default_revision")]
    pub revision: String,
    #[serde(default)]
    pub pooling: Pooling,
    #[serde(default)]
    pub preprocessing: Preprocessing,
    /// Prepended to every sentence (e5 wants `query: `).
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Scale pooled vectors to unit length (e5 was trained that way).
    #[serde(default)]
    pub normalize: bool,
}

fn default_revision() -> String {
    "local".into()
}

fn default_max_length() -> usize {
    512
}

pub const PROFILE_FILE: &str = "mawqif.json";

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
        if let Some(profile) = crate::hub::snapshot_profile(dir, config.max_position_embeddings) {
            return Ok(profile);
        }
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "local-model".into());
        return Ok(ModelProfile {
            id,
            revision: default_revision(),
            pooling: Pooling::default(),
            preprocessing: Preprocessing::default(),
            prefix: String::new(),
            max_length: config.max_position_embeddings.min(512),
            normalize: false,
        });
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

/// Write `bytes` to `path` atomically: a temp file in the same directory, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| MawqifError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        MawqifError::io(path, e)
    })
}

/// The sibling temp path used for atomic writes of `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}
