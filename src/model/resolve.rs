//! From what a user names (`--model`) to a model directory: a local
//! directory as it is, or a hub id `org/name[@REV]` through the shared hub
//! cache, downloading only what is missing.

use std::path::{Component, Path, PathBuf};

use crate::hub::Progress;

use crate::error::Result;
use crate::hub::{is_repo_id, Hub, HubModelRef, HubSettings, Snapshot};

use super::registry::Registry;

/// A hub model reference; without `@REV`, known models get the registry's pin.
pub fn hub_ref(spec: &str) -> Result<HubModelRef> {
    let registry = Registry::builtin();
    Ok(HubModelRef::parse(spec, |repo| {
        registry.get(repo).map(|e| e.revision.clone())
    })?)
}

/// Is `spec` meant as a hub id rather than a local path? `org/name[@rev]`
/// whose first component is not an existing local directory.
pub fn names_hub_model(spec: &str) -> bool {
    let repo = spec.split_once('@').map_or(spec, |(r, _)| r);
    if !is_repo_id(repo) {
        return false;
    }
    match Path::new(repo).components().next() {
        Some(Component::Normal(first)) => !Path::new(first).is_dir(),
        _ => false,
    }
}

/// Where a model spec led.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub dir: PathBuf,
    /// The hub snapshot, when the spec named a hub model.
    pub snapshot: Option<Snapshot>,
}

/// The model directory for `spec`: an existing directory, or a hub id
/// resolved through the cache of `hub` (downloading what is missing, with
/// `progress(file)` reporting each file). Anything else is returned as a
/// path, so that loading it reports the missing directory.
pub fn resolve_model<P: Progress>(
    spec: &str,
    hub: &HubSettings,
    progress: impl FnMut(&str) -> P,
) -> Result<ResolvedModel> {
    let path = Path::new(spec);
    if path.is_dir() || !names_hub_model(spec) {
        return Ok(ResolvedModel {
            dir: path.to_path_buf(),
            snapshot: None,
        });
    }
    let model = hub_ref(spec)?;
    let snapshot = Hub::new(hub.clone())?.resolve(&model, progress)?;
    Ok(ResolvedModel {
        dir: snapshot.dir.clone(),
        snapshot: Some(snapshot),
    })
}

/// The registry's default hub model, used when no local model exists.
pub fn default_hub_model() -> Option<String> {
    Registry::builtin().default_entry().map(|e| e.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        assert!(names_hub_model("org/name"));
        assert!(names_hub_model("org/name@v1"));
        assert!(!names_hub_model("models"));
        assert!(!names_hub_model("/abs/path"));
        // `src` exists here, so `src/x` is a path even though it looks like an id.
        assert!(!names_hub_model("src/x"));
        assert_eq!(
            hub_ref("CAMeL-Lab/bert-base-arabic-camelbert-msa")
                .unwrap()
                .revision,
            "5f73f6d061ac7c07950d8f55a9b17dcc7ff8033f"
        );
    }
}
