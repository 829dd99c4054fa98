//! Training classifier heads on labelled sentences.
//!
//! Contract: [`train_head`] fits a softmax regression (L2, class weights) or a
//! one-hidden-layer MLP on feature vectors; same data, options and seed give
//! the same head, bit for bit (fixed order of float operations, seeded init,
//! full-batch Adam). Data loading refuses anything under `eval/fixtures/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, Axis};
use sha2::{Digest, Sha256};

use crate::classify::{FeatureSpec, Head, HeadSpec, Label, HEAD_FORMAT};
use crate::error::{MawqifError, Result};
use crate::eval::{read_gold, GoldFormat, GoldItem, SplitMix64};
use crate::model_dir::Pooling;

/// The feature vector a head reads: the pooled vector, then cue features if asked.
pub fn features(vector: &[f32], text: &str, spec: &FeatureSpec) -> Vec<f32> {
    let mut f = vector.to_vec();
    if spec.cues {
        f.extend(crate::cues::cue_features(text));
    }
    f
}

/// A labelled sentence and the text (document) it came from.
#[derive(Debug, Clone)]
pub struct Example {
    pub doc: String,
    pub text: String,
    pub label: Label,
    pub alt: Option<Label>,
}

/// Refuse held-out evaluation data, however the path is spelled.
pub fn check_not_eval_fixture(path: &Path) -> Result<()> {
    let full = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let parts: Vec<String> = full
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .windows(2)
        .any(|w| w[0] == "eval" && w[1] == "fixtures")
    {
        return Err(MawqifError::EvalFixtureInTraining {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Load gold JSONL files, or every `*.jsonl` in directories (sorted).
pub fn load_examples(paths: &[PathBuf]) -> Result<Vec<Example>> {
    let mut files = Vec::new();
    for p in paths {
        check_not_eval_fixture(p)?;
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| MawqifError::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(MawqifError::Invalid(format!(
                    "{} holds no *.jsonl gold files",
                    p.display()
                )));
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut examples = Vec::new();
    for f in &files {
        check_not_eval_fixture(f)?;
        let doc = f
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(".gold.jsonl")
                    .to_string()
            })
            .unwrap_or_default();
        for GoldItem {
            text, label, alt, ..
        } in read_gold(f, GoldFormat::Jsonl)?
        {
            examples.push(Example {
                doc: doc.clone(),
                text,
                label,
                alt,
            });
        }
    }
    Ok(examples)
}

/// Split documents into train and dev by a seeded hash of their names, so a
/// text never straddles the split and the split does not depend on file order.
pub fn split_by_doc(
    examples: &[Example],
    dev_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut docs: Vec<&str> = examples.iter().map(|e| e.doc.as_str()).collect();
    docs.sort();
    docs.dedup();
    let mut keyed: Vec<(u64, &str)> = docs.iter().map(|d| (doc_key(d, seed), *d)).collect();
    keyed.sort();
    let n_dev = ((docs.len() as f64) * dev_fraction).round() as usize;
    let dev_docs: std::collections::HashSet<&str> =
        keyed.iter().take(n_dev).map(|(_, d)| *d).collect();
    let (mut train, mut dev) = (Vec::new(), Vec::new());
    for (k, e) in examples.iter().enumerate() {
        if dev_docs.contains(e.doc.as_str()) {
            dev.push(k);
        } else {
            train.push(k);
        }
    }
    (train, dev)
}

fn doc_key(doc: &str, seed: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(doc.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// K folds of whole documents (seeded), for cross-validation by text.
pub fn folds_by_doc(examples: &[Example], k: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut docs: Vec<&str> = examples.iter().map(|e| e.doc.as_str()).collect();
    docs.sort();
    docs.dedup();
    let mut keyed: Vec<(u64, &str)> = docs.iter().map(|d| (doc_key(d, seed), *d)).collect();
    keyed.sort();
    let fold_of: HashMap<&str, usize> = keyed
        .iter()
        .enumerate()
        .map(|(i, (_, d))| (*d, i % k))
        .collect();
    let mut folds = vec![Vec::new(); k];
    for (i, e) in examples.iter().enumerate() {
        folds[fold_of[e.doc.as_str()]].push(i);
    }
    folds
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    Softmax,
    Mlp { hidden: usize },
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub kind: HeadKind,
    pub l2: f32,
    pub epochs: usize,
    pub learning_rate: f32,
    pub class_weights: bool,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            kind: HeadKind::Softmax,
            l2: 0.3,
            epochs: 400,
            learning_rate: 0.01,
            class_weights: true,
            seed: 13,
        }
    }
}

/// Adam state for one parameter array.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    fn new(n: usize) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32, t: i32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let c1 = 1.0 - b1.powi(t);
        let c2 = 1.0 - b2.powi(t);
        for i in 0..params.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * grads[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * grads[i] * grads[i];
            params[i] -= lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + eps);
        }
    }
}

fn softmax_rows(z: &mut Array2<f32>) {
    for mut row in z.rows_mut() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
}

/// Fit a head on feature rows `x` with labels `y`.
pub fn train_head(
    x: &[Vec<f32>],
    y: &[Label],
    spec: HeadSpec,
    options: &TrainOptions,
) -> Result<Head> {
    let n = x.len();
    if n == 0 || n != y.len() {
        return Err(MawqifError::Invalid("no training examples".into()));
    }
    let d = spec.features.len();
    if x.iter().any(|r| r.len() != d) {
        return Err(MawqifError::Invalid(format!(
            "feature rows must have length {d}"
        )));
    }
    // Standardize: mean 0, unit variance per feature (scale stored as 1/std).
    let xa = Array2::from_shape_fn((n, d), |(i, j)| x[i][j]);
    let mean = xa.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(d));
    let var = xa.var_axis(Axis(0), 0.0);
    let scale = var.mapv(|v| if v > 1e-12 { 1.0 / v.sqrt() } else { 1.0 });
    let xs = (&xa - &mean) * &scale;

    let k = Label::ALL.len();
    let mut counts = [0usize; 4];
    for l in y {
        counts[l.index()] += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let class_w: Vec<f32> = counts
        .iter()
        .map(|&c| {
            if !options.class_weights || c == 0 {
                1.0
            } else {
                n as f32 / (present as f32 * c as f32)
            }
        })
        .collect();
    let mut onehot = Array2::<f32>::zeros((n, k));
    let mut row_w = Array1::<f32>::zeros(n);
    for (i, l) in y.iter().enumerate() {
        onehot[[i, l.index()]] = 1.0;
        row_w[i] = class_w[l.index()];
    }
    let w_sum = row_w.sum();
    let mut rng = SplitMix64::new(options.seed);
    let mut init = |rows: usize, cols: usize| -> Array2<f32> {
        let bound = (6.0 / (rows + cols) as f64).sqrt();
        Array2::from_shape_fn((rows, cols), |_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
    };
    let layers = match options.kind {
        HeadKind::Softmax => {
            let mut w = Array2::<f32>::zeros((k, d));
            let mut b = Array1::<f32>::zeros(k);
            let (mut aw, mut ab) = (Adam::new(k * d), Adam::new(k));
            for t in 1..=options.epochs as i32 {
                let mut p = xs.dot(&w.t()) + &b;
                softmax_rows(&mut p);
                let delta = (&p - &onehot) * row_w.view().insert_axis(Axis(1)) / w_sum;
                let gw = delta.t().dot(&xs) + &w * options.l2;
                let gb = delta.sum_axis(Axis(0));
                aw.step(
                    w.as_slice_mut().unwrap_or_default(),
                    gw.as_standard_layout().as_slice().unwrap_or_default(),
                    options.learning_rate,
                    t,
                );
                ab.step(
                    b.as_slice_mut().unwrap_or_default(),
                    gb.as_slice().unwrap_or_default(),
                    options.learning_rate,
                    t,
                );
            }
            vec![(w.into_raw_vec_and_offset().0, b.to_vec())]
        }
        HeadKind::Mlp { hidden } => {
            let mut w1 = init(hidden, d);
            let mut b1 = Array1::<f32>::zeros(hidden);
            let mut w2 = init(k, hidden);
            let mut b2 = Array1::<f32>::zeros(k);
            let (mut a1, mut ab1, mut a2, mut ab2) = (
                Adam::new(hidden * d),
                Adam::new(hidden),
                Adam::new(k * hidden),
                Adam::new(k),
            );
            for t in 1..=options.epochs as i32 {
                let h_pre = xs.dot(&w1.t()) + &b1;
                let h = h_pre.mapv(|v| v.max(0.0));
                let mut p = h.dot(&w2.t()) + &b2;
                softmax_rows(&mut p);
                let delta = (&p - &onehot) * row_w.view().insert_axis(Axis(1)) / w_sum;
                let gw2 = delta.t().dot(&h) + &w2 * options.l2;
                let gb2 = delta.sum_axis(Axis(0));
                let dh = delta.dot(&w2) * h_pre.mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
                let gw1 = dh.t().dot(&xs) + &w1 * options.l2;
                let gb1 = dh.sum_axis(Axis(0));
                let lr = options.learning_rate;
                a2.step(
                    w2.as_slice_mut().unwrap_or_default(),
                    gw2.as_standard_layout().as_slice().unwrap_or_default(),
                    lr,
                    t,
                );
                ab2.step(
                    b2.as_slice_mut().unwrap_or_default(),
                    gb2.as_slice().unwrap_or_default(),
                    lr,
                    t,
                );
                a1.step(
                    w1.as_slice_mut().unwrap_or_default(),
                    gw1.as_standard_layout().as_slice().unwrap_or_default(),
                    lr,
                    t,
                );
                ab1.step(
                    b1.as_slice_mut().unwrap_or_default(),
                    gb1.as_slice().unwrap_or_default(),
                    lr,
                    t,
                );
            }
            vec![
                (w1.into_raw_vec_and_offset().0, b1.to_vec()),
                (w2.into_raw_vec_and_offset().0, b2.to_vec()),
            ]
        }
    };
    Ok(Head {
        spec,
        feature_mean: mean.to_vec(),
        feature_scale: scale.to_vec(),
        layers,
    })
}

/// The `head.json` of a head for an encoder.
pub fn head_spec(
    encoder_id: &str,
    encoder_revision: &str,
    pooling: Pooling,
    features: FeatureSpec,
    kind: HeadKind,
) -> HeadSpec {
    HeadSpec {
        format: HEAD_FORMAT.into(),
        labels: Label::ALL.to_vec(),
        encoder_id: encoder_id.into(),
        encoder_revision: encoder_revision.into(),
        pooling,
        features,
        hidden: match kind {
            HeadKind::Softmax => None,
            HeadKind::Mlp { hidden } => Some(hidden),
        },
        encoder_override: None,
        training: serde_json::Value::Null,
    }
}

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
        crate::model_dir::write_atomic(&self.path, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

/// Vectors for `texts`, computing only those missing from the encoder's
/// cache. `on_missing(count, cache_path)` is called before any encoding.
pub fn embed_with_cache(
    embedder: &crate::Embedder,
    texts: &[&str],
    batch_size: usize,
    on_missing: impl FnOnce(usize, &Path),
    on_batch: impl FnMut(usize),
) -> Result<Vec<Vec<f32>>> {
    let path = cache_path(&embedder.profile.id, &embedder.profile.revision);
    let mut cache = EmbeddingCache::open(path.clone(), embedder.dim());
    // The key is what the encoder sees, so a change of prefix is a cache miss.
    let key = |t: &str| format!("{}{}", embedder.profile.prefix, t);
    let mut missing: Vec<&str> = texts
        .iter()
        .copied()
        .filter(|t| cache.get(&key(t)).is_none())
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        on_missing(missing.len(), &path);
        let options = crate::RunOptions {
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
            cache
                .get(&key(t))
                .cloned()
                .ok_or_else(|| MawqifError::Invalid(format!("no cached vector for {t:?}")))
        })
        .collect()
}

/// Where vectors of an encoder are cached: `$MAWQIF_CACHE` (default
/// `~/.cache/mawqif`) `/embeddings/<id>@<revision>.bin`.
pub fn cache_path(encoder_id: &str, revision: &str) -> PathBuf {
    cache_root()
        .join("embeddings")
        .join(format!("{}.bin", safe_name(encoder_id, revision)))
}

/// `$MAWQIF_CACHE`, else `~/.cache/mawqif`.
pub fn cache_root() -> PathBuf {
    std::env::var_os("MAWQIF_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mawqif")))
        .unwrap_or_else(|| PathBuf::from(".mawqif-cache"))
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

/// Where a head trained on first use for an encoder is kept.
pub fn auto_head_dir(encoder_id: &str, revision: &str) -> PathBuf {
    cache_root()
        .join("heads")
        .join(safe_name(encoder_id, revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Vec<Vec<f32>>, Vec<Label>) {
        // Four separable clusters in 3-D.
        let mut rng = SplitMix64::new(5);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for (k, l) in Label::ALL.iter().enumerate() {
            for _ in 0..20 {
                let mut v: Vec<f32> = (0..3).map(|_| rng.unit() as f32 * 0.3).collect();
                if k < 3 {
                    v[k] += 2.0;
                } else {
                    v.iter_mut().for_each(|a| *a -= 1.0);
                }
                x.push(v);
                y.push(*l);
            }
        }
        (x, y)
    }

    fn spec(kind: HeadKind) -> HeadSpec {
        head_spec(
            "toy",
            "r",
            Pooling::Mean,
            FeatureSpec {
                embedding_dim: 3,
                cues: false,
            },
            kind,
        )
    }

    #[test]
    fn softmax_and_mlp_learn_separable_data_reproducibly() {
        let (x, y) = toy();
        for kind in [HeadKind::Softmax, HeadKind::Mlp { hidden: 8 }] {
            let opts = TrainOptions {
                kind,
                ..Default::default()
            };
            let a = train_head(&x, &y, spec(kind), &opts).unwrap();
            let b = train_head(&x, &y, spec(kind), &opts).unwrap();
            assert_eq!(a.layers, b.layers, "same seed, same head");
            let correct = x
                .iter()
                .zip(&y)
                .filter(|(v, l)| a.predict(v).best() == **l)
                .count();
            assert_eq!(correct, x.len(), "{kind:?}");
        }
    }

    #[test]
    fn refuses_eval_fixtures() {
        let err = load_examples(&[PathBuf::from("eval/fixtures/article.gold.jsonl")]).unwrap_err();
        assert!(matches!(err, MawqifError::EvalFixtureInTraining { .. }));
        let err = load_examples(&[PathBuf::from("eval/train/../fixtures")]).unwrap_err();
        assert!(matches!(err, MawqifError::EvalFixtureInTraining { .. }));
    }

    #[test]
    fn split_keeps_documents_whole() {
        let ex: Vec<Example> = (0..40)
            .map(|i| Example {
                doc: format!("d{}", i / 4),
                text: i.to_string(),
                label: Label::Report,
                alt: None,
            })
            .collect();
        let (train, dev) = split_by_doc(&ex, 0.2, 1);
        assert_eq!(dev.len(), 8);
        let dev_docs: std::collections::HashSet<_> = dev.iter().map(|&i| &ex[i].doc).collect();
        assert!(train.iter().all(|&i| !dev_docs.contains(&ex[i].doc)));
        let folds = folds_by_doc(&ex, 5, 1);
        assert_eq!(folds.iter().map(|f| f.len()).sum::<usize>(), 40);
    }

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
