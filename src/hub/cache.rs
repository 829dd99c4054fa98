//! The standard hub cache layout, shared with Python's `huggingface_hub`:
//!
//! - `<cache>/models--org--name/blobs/<etag>`: file contents, named by the
//!   hub's etag (the sha256 of an LFS file, the git blob sha1 of others);
//! - `snapshots/<commit>/<file>`: relative links `../../blobs/<etag>`;
//! - `refs/<revision>`: the commit a branch or tag pointed to (never written
//!   for a revision that is the commit itself);
//! - `<cache>/.locks/models--org--name/<etag>.lock`: the `flock` lock both
//!   clients take before writing a blob;
//! - `<cache>/CACHEDIR.TAG`, which tells backup tools to skip the cache.
//!
//! Finding a complete snapshot without the network is here too.

use std::path::{Path, PathBuf};

use super::error::{io_err, HubError, HubResult};
use super::listing::{choose_files, is_commit_sha};
use super::HubModelRef;

/// The cache folder of one model repo.
pub fn repo_cache_dir(cache_dir: &Path, repo: &str) -> PathBuf {
    cache_dir.join(format!("models--{}", repo.replace('/', "--")))
}

/// Where the content of `etag` lives in a repo's cache folder.
pub(crate) fn blob_path(repo_dir: &Path, etag: &str) -> PathBuf {
    repo_dir.join("blobs").join(etag)
}

/// The lock Python's client takes for the same blob (`.locks/<repo folder>/<etag>.lock`).
pub(crate) fn lock_path(cache_dir: &Path, repo: &str, etag: &str) -> PathBuf {
    let folder = repo_cache_dir(cache_dir, repo);
    let name = folder.file_name().unwrap_or_default();
    cache_dir
        .join(".locks")
        .join(name)
        .join(format!("{etag}.lock"))
}

/// An etag is used as a file name: only plain names are accepted.
pub(crate) fn is_safe_etag(etag: &str) -> bool {
    !etag.is_empty()
        && etag.len() <= 128
        && !etag.starts_with('.')
        && etag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Point `snapshots/<commit>/<file>` at its blob with a relative link, as
/// Python does (`../../blobs/<etag>`, one `../` more per folder in `file`),
/// so that the cache can be moved. The link is made beside its place and
/// renamed over it, so a reader never sees it missing.
pub(crate) fn link_pointer(repo_dir: &Path, commit: &str, file: &str, etag: &str) -> HubResult<()> {
    let pointer = repo_dir.join("snapshots").join(commit).join(file);
    let parent = pointer.parent().unwrap_or(repo_dir);
    std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    let depth = 2 + file.matches('/').count();
    let target = PathBuf::from(format!("{}blobs/{etag}", "../".repeat(depth)));
    if std::fs::read_link(&pointer).is_ok_and(|t| t == target) {
        return Ok(());
    }
    crate::files::replace_with(&pointer, |tmp| {
        let _ = std::fs::remove_file(tmp);
        place_link(&target, &blob_path(repo_dir, etag), tmp).map_err(|source| {
            crate::files::WriteError {
                path: tmp.to_path_buf(),
                source,
            }
        })
    })
    .map_err(HubError::from)
}

#[cfg(unix)]
fn place_link(target: &Path, _blob: &Path, at: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

/// Without symlinks (as Python does there), the snapshot holds a copy.
#[cfg(not(unix))]
fn place_link(_target: &Path, blob: &Path, at: &Path) -> std::io::Result<()> {
    std::fs::copy(blob, at).map(|_| ())
}

/// Mark the cache for backup tools (the Cache Directory Tagging
/// Specification), as Python's client does; best effort.
pub(crate) fn tag_cache_dir(cache_dir: &Path) {
    let tag = cache_dir.join("CACHEDIR.TAG");
    if !tag.exists() {
        let _ = crate::files::write_atomic(
            &tag,
            b"Signature: 8a477f597d28d172789f06886806bc55\n\
              # This file is a cache directory tag: the Hugging Face hub cache.\n\
              # For information about cache directory tags, see https://bford.info/cachedir/\n",
        );
    }
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
    fn locks_and_links_sit_where_python_puts_them() {
        let cache = tempfile::tempdir().unwrap();
        assert_eq!(
            lock_path(cache.path(), "org/name", "abc"),
            cache.path().join(".locks/models--org--name/abc.lock")
        );
        let repo = repo_cache_dir(cache.path(), "org/name");
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::write(blob_path(&repo, "e1"), b"x").unwrap();
        link_pointer(&repo, "c0", "config.json", "e1").unwrap();
        link_pointer(&repo, "c0", "onnx/model.onnx", "e1").unwrap();
        let snap = repo.join("snapshots/c0");
        assert_eq!(
            std::fs::read_link(snap.join("config.json")).unwrap(),
            PathBuf::from("../../blobs/e1")
        );
        assert_eq!(
            std::fs::read_link(snap.join("onnx/model.onnx")).unwrap(),
            PathBuf::from("../../../blobs/e1")
        );
        assert_eq!(std::fs::read(snap.join("onnx/model.onnx")).unwrap(), b"x");
        // Relinking to another blob replaces the link; no temp file is left.
        std::fs::write(blob_path(&repo, "e2"), b"y").unwrap();
        link_pointer(&repo, "c0", "config.json", "e2").unwrap();
        assert_eq!(std::fs::read(snap.join("config.json")).unwrap(), b"y");
        assert_eq!(std::fs::read_dir(&snap).unwrap().count(), 2);
        for bad in ["", "../x", ".hidden", "a/b", "a b"] {
            assert!(!is_safe_etag(bad), "{bad}");
        }
        assert!(is_safe_etag("ce013625030ba8dba906f756967f9e9ca394464a"));
    }

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
