//! A head for an encoder that has none: trained once on the bundled
//! training data and kept in mawqif's cache.

use std::path::{Path, PathBuf};

use crate::classifier::{find_default_head, Classifier, LoadOptions};
use crate::encode::Embedder;
use crate::error::Result;
use crate::head::Head;
use crate::model::ModelDir;

use super::cache::{auto_head_dir, training_data_fingerprint};
use super::data::load_examples;
use super::fit::TrainOptions;
use super::recipe::{train_frozen, FrozenTraining, Quiet};

/// Like [`Classifier::load_neural`], but when the model has no head
/// anywhere, train the default head on `train_data` (gold JSONL files or
/// directories) once and keep it under `cache_root` ([`auto_head_dir`]).
/// `notify` is told what is happening, since this takes a while.
pub fn load_or_train(
    model_dir: &Path,
    head_dir: Option<&Path>,
    train_data: &[PathBuf],
    cache_root: &Path,
    options: &LoadOptions,
    mut notify: impl FnMut(&str),
) -> Result<Classifier> {
    let dir = ModelDir::open(model_dir)?;
    let profile = &dir.profile;
    let found = match head_dir {
        Some(h) => Ok(h.to_path_buf()),
        None => find_default_head(model_dir, profile, &options.models_root),
    };
    let have_data = !train_data.is_empty() && train_data.iter().all(|p| p.exists());
    let head_dir = match found {
        Ok(h) => h,
        Err(no_head) => {
            let auto_dir = auto_head_dir(cache_root, profile)?;
            let cached = auto_dir.join("head.json").is_file();
            if have_data {
                let fingerprint = training_data_fingerprint(train_data)?;
                if !cached || recorded_fingerprint(&auto_dir).as_deref() != Some(&fingerprint) {
                    return train_and_load(
                        &dir,
                        train_data,
                        &fingerprint,
                        &auto_dir,
                        cache_root,
                        options,
                        notify,
                    );
                }
            } else if !cached {
                return Err(no_head);
            }
            notify(&format!(
                "using the head trained earlier for {} in {}",
                profile.id,
                auto_dir.display()
            ));
            auto_dir
        }
    };
    Classifier::with_head(&dir, &head_dir, options.engine)
}

/// Train the default frozen head on `train_data`, keep it in `auto_dir` and
/// load the classifier with the encoder already in memory.
fn train_and_load(
    dir: &ModelDir,
    train_data: &[PathBuf],
    data_fingerprint: &str,
    auto_dir: &Path,
    cache_root: &Path,
    options: &LoadOptions,
    mut notify: impl FnMut(&str),
) -> Result<Classifier> {
    let embedder = Embedder::load(dir, None, options.engine)?;
    let examples = load_examples(train_data)?;
    notify(&format!(
        "no classifier head for {}: training one on {} labelled sentences from {}; it will be kept in {}",
        embedder.profile.id,
        examples.len(),
        train_data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        auto_dir.display()
    ));
    let training = FrozenTraining {
        options: TrainOptions::default(),
        cues: true,
        context: false,
        context_embedding: false,
        dev_fraction: 0.0,
        cv_folds: None,
        batch_size: 16,
        cache_root: cache_root.to_path_buf(),
    };
    let mut trained = train_frozen(&embedder, &examples, train_data, &training, &mut Quiet)?;
    trained.head.spec.training = serde_json::json!({
        "data": train_data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "data_fingerprint": data_fingerprint,
        "sentences": examples.len(),
        "trained": "automatically on first use",
    });
    trained.head.save(auto_dir)?;
    // The encoder just loaded serves the classifier too: load it once.
    let head = crate::head::Head::load(auto_dir)?;
    head.check_encoder(auto_dir, embedder.dim(), embedder.profile.pooling)?;
    Ok(Classifier::Neural {
        embedder: Box::new(embedder),
        head: Box::new(head),
    })
}

/// The training-data fingerprint an auto-trained head recorded, if the head
/// loads: a damaged cached head is trained again rather than refused.
fn recorded_fingerprint(auto_dir: &Path) -> Option<String> {
    let head = Head::load(auto_dir).ok()?;
    head.spec.training["data_fingerprint"]
        .as_str()
        .map(str::to_owned)
}
