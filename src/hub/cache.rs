//! The standard hub cache layout (`<cache>/models--org--name/{blobs,
//! snapshots,refs}`), shared with Python's `huggingface_hub`: finding a
//! complete snapshot without the network, and recording revision refs.

use std::path::{Path, PathBuf};

use super::error::{io_err, HubError, HubResult};
use super::listing::choose_files;
use super::HubModelRef;

pub(crate) fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The cache folder of one model repo.
pub fn repo_cache_dir(cache_dir: &Path, repo: &str) -> PathBuf {
    cache_dir.join(format!("models--{}", repo.replace('/', "--")))
}

/// For a path inside the hub cache (`…/models--org--name/snapshots/<sha>`),
/// the repo id and commit it holds.
pub fn snapshot_identity(dir: &Path) -> Option<(String, String)> {
    let commit = dir.file_name()?.to_str()?;
    let snapshots = dir.parent()?;
    if snapshots.file_name()? != "snapshots" || !is_commit_sha(commit) {
        return None;
    }
    let folder = snapshots.parent()?.file_name()?.to_str()?;
    let id = folder.strip_prefix("models--")?.replacen("--", "/", 1);
    super::is_repo_id(&id).then(|| (id, commit.to_string()))
}

/// A complete model in the cache.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub model: HubModelRef,
    pub commit: String,
    /// `<cache>/models--org--name/snapshots/<commit>`: a model directory.
    pub dir: PathBuf,
    pub files: Vec<String>,
    /// Files fetched over the network in this call (empty on a cache hit).
    pub downloaded: Vec<String>,
}

/// The commit a revision points to in the cache, if known there.
fn cached_commit(cache_dir: &Path, model: &HubModelRef) -> Option<String> {
    let repo_dir = repo_cache_dir(cache_dir, &model.repo);
    if is_commit_sha(&model.revision) {
        return Some(model.revision.clone());
    }
    let text = std::fs::read_to_string(repo_dir.join("refs").join(&model.revision)).ok()?;
    let commit = text.trim();
    is_commit_sha(commit).then(|| commit.to_string())
}

/// A complete snapshot of `model` from the cache alone (no network).
pub fn cached_snapshot(cache_dir: &Path, model: &HubModelRef) -> HubResult<Snapshot> {
    let not_cached = |missing: String, why: &'static str| HubError::NotCached {
        repo: model.repo.clone(),
        revision: model.revision.clone(),
        cache: cache_dir.to_path_buf(),
        missing,
        why,
    };
    let Some(commit) = cached_commit(cache_dir, model) else {
        return Err(not_cached(
            format!("refs/{} (never downloaded)", model.revision),
            "the hub is not to be used (HF_HUB_OFFLINE)",
        ));
    };
    let dir = repo_cache_dir(cache_dir, &model.repo)
        .join("snapshots")
        .join(&commit);
    if !dir.is_dir() {
        return Err(not_cached(
            format!("snapshots/{commit} (never downloaded)"),
            "the hub is not to be used (HF_HUB_OFFLINE)",
        ));
    }
    let present: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                // `exists` follows the link: a dangling pointer is not a file.
                .filter(|e| e.path().exists())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    match choose_files(&present) {
        Ok(files) => Ok(Snapshot {
            model: model.clone(),
            commit,
            dir,
            files,
            downloaded: Vec::new(),
        }),
        Err(missing) => Err(not_cached(
            missing.join(", "),
            "the hub is not to be used (HF_HUB_OFFLINE)",
        )),
    }
}

pub(crate) fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> HubResult<()> {
    if revision == commit {
        return Ok(());
    }
    let path = repo_dir.join("refs").join(revision);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    crate::files::write_atomic(&path, commit.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_paths_name_their_repo() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let dir = PathBuf::from(format!("/c/hub/models--UBC-NLP--ARBERT/snapshots/{sha}"));
        assert_eq!(
            snapshot_identity(&dir),
            Some(("UBC-NLP/ARBERT".to_string(), sha.to_string()))
        );
        assert_eq!(
            snapshot_identity(Path::new("/models/multilingual-e5-small")),
            None
        );
    }
}
