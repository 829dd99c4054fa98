//! Sentence vectors cached on disk per encoder, so that training and
//! cross-validation embed each sentence once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::encode::{Embedder, RunOptions};
use crate::error::{MawqifError, Result};
use crate::files::write_atomic;
use crate::model::ModelProfile;

use super::data::gold_files;

/// On-disk cache of sentence vectors for one encoder: sha256(input) → vector.
/// Layout: repeated records of 32 hash bytes then `dim` little-endian f32.
pub struct EmbeddingCache {
    path: PathBuf,
    dim: usize,
    entries: HashMap<[u8; 32], Vec<f32>>,
    dirty: bool,
}

impl EmbeddingCache {
    pub fn open(path: PathBuf, dim: usize) -> Self {
        let mut entries = HashMap::new();
        if let Ok(bytes) = std::fs::read(&path) {
            let rec = 32 + 4 * dim;
            // A cache of another width or a torn write is ignored, not trusted.
            if bytes.len() % rec == 0 {
                for chunk in bytes.chunks_exact(rec) {
                    let mut key = [0u8; 32];
                    key.copy_from_slice(&chunk[..32]);
                    let v = chunk[32..]
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    entries.insert(key, v);
                }
            }
        }
        Self {
            path,
            dim,
            entries,
            dirty: false,
        }
    }

    pub fn key(text: &str) -> [u8; 32] {
        Sha256::digest(text.as_bytes()).into()
    }

    pub fn get(&self, text: &str) -> Option<&Vec<f32>> {
        self.entries.get(&Self::key(text))
    }

    pub fn insert(&mut self, text: &str, v: Vec<f32>) {
        if v.len() == self.dim {
            self.entries.insert(Self::key(text), v);
            self.dirty = true;
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Write the cache atomically (sorted by key: same content, same bytes).
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| MawqifError::io(parent, e))?;
        }
        let mut keys: Vec<&[u8; 32]> = self.entries.keys().collect();
        keys.sort();
        let mut bytes = Vec::with_capacity(keys.len() * (32 + 4 * self.dim));
        for k in keys {
            bytes.extend_from_slice(k);
            for f in &self.entries[k] {
                bytes.extend_from_slice(&f.to_le_bytes());
            }
        }
        write_atomic(&self.path, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

/// Vectors for `texts`, computing only those missing from the encoder's
/// cache. `on_missing(count, cache_path)` is called before any encoding.
pub fn embed_with_cache(
    embedder: &Embedder,
    texts: &[&str],
    batch_size: usize,
    cache_root: &Path,
    on_missing: impl FnOnce(usize, &Path),
    on_batch: impl FnMut(usize),
) -> Result<Vec<Vec<f32>>> {
    let path = cache_path(cache_root, &embedder.profile.id, &embedder.profile.revision);
    let mut cache = EmbeddingCache::open(path.clone(), embedder.dim());
    // The key is what the encoder sees, so a change of prefix or
    // preprocessing is a cache miss.
    let key = |t: &str| embedder.encoder_input(t);
    let mut missing: Vec<&str> = texts
        .iter()
        .copied()
        .filter(|t| cache.get(&key(t)).is_none())
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        on_missing(missing.len(), &path);
        let options = RunOptions {
            batch_size,
            allow_long: true,
        };
        let (vectors, _) = embedder.embed(&missing, &options, on_batch)?;
        for (t, v) in missing.iter().zip(vectors) {
            cache.insert(&key(t), v);
        }
        cache.save()?;
    }
    texts
        .iter()
        .map(|t| {
            cache.get(&key(t)).cloned().ok_or_else(|| {
                MawqifError::malformed(&path, format!("no vector for {t:?} after encoding"))
            })
        })
        .collect()
}

/// Where vectors of an encoder are cached under mawqif's cache root:
/// `<root>/embeddings/<id>@<revision>.bin`.
pub fn cache_path(cache_root: &Path, encoder_id: &str, revision: &str) -> PathBuf {
    cache_root
        .join("embeddings")
        .join(format!("{}.bin", safe_name(encoder_id, revision)))
}

/// A file-name-safe `<id>@<revision>`.
pub fn safe_name(encoder_id: &str, revision: &str) -> String {
    format!("{encoder_id}@{revision}")
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where a head trained on first use for an encoder is kept. The name
/// carries a fingerprint of the profile, because a new prefix or
/// preprocessing makes a head trained earlier stale though the encoder's id
/// and revision stay.
pub fn auto_head_dir(cache_root: &Path, profile: &ModelProfile) -> Result<PathBuf> {
    let digest = Sha256::digest(serde_json::to_vec(profile)?);
    Ok(cache_root.join("heads").join(format!(
        "{}+{}",
        safe_name(&profile.id, &profile.revision),
        short_hex(&digest)
    )))
}

/// A fingerprint of the training files `train_data` names (their file names
/// and bytes), recorded in an auto-trained head so that new labels retrain
/// it. Names, not paths: the same data reached by another path is the same.
pub fn training_data_fingerprint(train_data: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    for file in gold_files(train_data)? {
        let name = file.file_name().unwrap_or(file.as_os_str());
        h.update(name.to_string_lossy().as_bytes());
        h.update(std::fs::read(&file).map_err(|e| MawqifError::io(&file, e))?);
    }
    Ok(short_hex(&h.finalize()))
}

fn short_hex(digest: &[u8]) -> String {
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.bin");
        let mut c = EmbeddingCache::open(p.clone(), 2);
        c.insert("a", vec![1.0, 2.0]);
        c.save().unwrap();
        let c2 = EmbeddingCache::open(p, 2);
        assert_eq!(c2.get("a"), Some(&vec![1.0, 2.0]));
        assert_eq!(c2.get("b"), None);
    }
}
