//! Models from the Hugging Face hub, kept in the standard hub cache
//! (`<cache>/models--org--name/{blobs,snapshots,refs}`) so that the Python
//! tools and mawqif share one copy.
//!
//! Contract: [`Hub::download`] lists the repo at a revision, picks the files
//! mawqif needs ([`choose_files`]), downloads each through `hf-hub`'s
//! blocking client (resumable `.part` files, renamed into place when whole),
//! checks every file against the size and hash the hub lists, and records
//! the revision → commit ref. [`cached_snapshot`] finds a complete snapshot
//! without the network; [`Hub::resolve`] uses the cache first and downloads
//! only what is missing.

use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::api::Progress;
use hf_hub::{Repo, RepoType};
use serde::Deserialize;
use sha2::Digest;

use crate::model_dir::ModelProfile;
use crate::registry::Registry;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Retries of a broken transfer; each resumes from what has arrived.
const DOWNLOAD_RETRIES: usize = 3;

/// What can go wrong talking to the hub or its cache, each with what to do.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("`{0}` is not a hub model id: expected `org/name` or `org/name@revision`")]
    BadId(String),

    #[error(
        "{repo} was not found on {endpoint} (HTTP {status}): check the id; \
         if the repo is private, pass a token with --token or HF_TOKEN{token_note}"
    )]
    RepoNotFound {
        repo: String,
        endpoint: String,
        status: u16,
        token_note: &'static str,
    },

    #[error("{repo} has no revision `{revision}`: give a branch, tag or commit sha that exists")]
    RevisionNotFound { repo: String, revision: String },

    #[error(
        "{repo} refused access (HTTP {status}{detail}): the repo is gated or private; \
         accept its terms on the hub, then pass a token that has access with --token or HF_TOKEN"
    )]
    Unauthorized {
        repo: String,
        status: u16,
        detail: String,
    },

    #[error(
        "cannot reach the hub at {endpoint}: {reason}. Check the network or HF_ENDPOINT; \
         models already in the cache work with HF_HUB_OFFLINE=1"
    )]
    Unreachable { endpoint: String, reason: String },

    #[error("the hub answered HTTP {status} for {url}{detail}")]
    Http {
        url: String,
        status: u16,
        detail: String,
    },

    #[error("{repo}@{revision} has no usable {what} (it has: {files})")]
    NoUsableFiles {
        repo: String,
        revision: String,
        what: String,
        files: String,
    },

    #[error(
        "{file} of {repo} failed verification ({check}: expected {expected}, got {actual}); \
         the bad copy was deleted from the cache: run the download again"
    )]
    Corrupt {
        repo: String,
        file: String,
        check: &'static str,
        expected: String,
        actual: String,
    },

    #[error(
        "downloading {file} of {repo} broke off: {reason}. What arrived is kept as a \
         .part file in the cache and the next run resumes from it"
    )]
    Interrupted {
        repo: String,
        file: String,
        reason: String,
    },

    #[error("disk full while writing to the hub cache {cache}: free space, or set HF_HOME / --cache-dir to a bigger disk")]
    DiskFull { cache: PathBuf },

    #[error(
        "{repo}@{revision} is not complete in the hub cache {cache} (missing: {missing}) and \
         {why}: run `mawqif download {repo}` where the hub can be reached"
    )]
    NotCached {
        repo: String,
        revision: String,
        cache: PathBuf,
        missing: String,
        why: &'static str,
    },

    #[error("another process is downloading into {0}: wait for it to finish")]
    Locked(PathBuf),

    #[error("hub cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("unexpected answer from the hub for {what}: {reason}")]
    Protocol { what: String, reason: String },
}

pub type HubResult<T> = std::result::Result<T, HubError>;

fn io_err(path: &Path, source: std::io::Error) -> HubError {
    HubError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the hub is and how to talk to it, as the Python tools read it
/// from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct HubSettings {
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: String,
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// `HF_TOKEN`, else the token file `$HF_HOME/token` (`huggingface-cli login`).
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE=1`: use the cache only, never the network.
    pub offline: bool,
}

impl HubSettings {
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// The same, reading variables through `var` (tests pass their own).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let home = var("HOME").map(PathBuf::from).unwrap_or_default();
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache"))
                .join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = var("HF_TOKEN").or_else(|| {
            let path = var("HF_TOKEN_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| hf_home.join("token"));
            std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = var("HF_HUB_OFFLINE")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true"))
            .unwrap_or(false);
        Self {
            endpoint,
            cache_dir,
            token,
            offline,
        }
    }
}

/// A model repo on the hub at a revision (branch, tag, commit or `refs/pr/N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModelRef {
    pub repo: String,
    pub revision: String,
}

impl HubModelRef {
    /// Parse `org/name` or `org/name@REV`. Without `@REV`, the registry's
    /// pinned revision for a known model, else `main`.
    pub fn parse(spec: &str, registry: &Registry) -> HubResult<Self> {
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) => (r, Some(rev)),
            None => (spec, None),
        };
        if !is_repo_id(repo)
            || revision.is_some_and(|r| r.is_empty() || r.contains(char::is_whitespace))
        {
            return Err(HubError::BadId(spec.to_string()));
        }
        let revision = match revision {
            Some(r) => r.to_string(),
            None => registry
                .get(repo)
                .map(|e| e.revision.clone())
                .unwrap_or_else(|| "main".to_string()),
        };
        Ok(Self {
            repo: repo.to_string(),
            revision,
        })
    }

    fn hf_repo(&self, revision: &str) -> Repo {
        Repo::with_revision(self.repo.clone(), RepoType::Model, revision.to_string())
    }
}

impl std::fmt::Display for HubModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)
    }
}

/// `org/name` with the characters the hub allows.
pub fn is_repo_id(s: &str) -> bool {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.starts_with(['.', '-'])
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(s.split_once('/'), Some((org, name)) if ok_part(org) && ok_part(name))
}

fn is_commit_sha(s: &str) -> bool {
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
    is_repo_id(&id).then(|| (id, commit.to_string()))
}

/// The profile of a hub snapshot: the registry's settings for known models,
/// plain defaults (mean pooling, no preprocessing) otherwise.
pub fn snapshot_profile(dir: &Path, max_positions: usize) -> Option<ModelProfile> {
    let (id, commit) = snapshot_identity(dir)?;
    let registry = Registry::builtin();
    Some(match registry.get(&id) {
        Some(entry) => {
            let mut p = entry.profile(&commit);
            p.max_length = p.max_length.min(max_positions);
            p
        }
        None => ModelProfile {
            id,
            revision: commit,
            pooling: Default::default(),
            preprocessing: Default::default(),
            prefix: String::new(),
            max_length: max_positions.min(512),
            normalize: false,
        },
    })
}

/// The files mawqif needs, picked from what a repo (or a snapshot) has:
/// `config.json`; `tokenizer.json`, else `vocab.txt` (with its
/// `tokenizer_config.json` and `special_tokens_map.json` when present);
/// `model.safetensors`, else `pytorch_model.bin`.
/// On failure, names what is missing.
pub fn choose_files(available: &[String]) -> Result<Vec<String>, Vec<&'static str>> {
    let has = |f: &str| available.iter().any(|a| a == f);
    let mut chosen = Vec::new();
    let mut missing = Vec::new();
    if has("config.json") {
        chosen.push("config.json".to_string());
    } else {
        missing.push("config.json");
    }
    if has("tokenizer.json") {
        chosen.push("tokenizer.json".to_string());
    } else if has("vocab.txt") {
        chosen.push("vocab.txt".to_string());
        for extra in ["tokenizer_config.json", "special_tokens_map.json"] {
            if has(extra) {
                chosen.push(extra.to_string());
            }
        }
    } else {
        missing.push("a tokenizer (tokenizer.json or vocab.txt)");
    }
    if has("model.safetensors") {
        chosen.push("model.safetensors".to_string());
    } else if has("pytorch_model.bin") {
        chosen.push("pytorch_model.bin".to_string());
    } else {
        missing.push("weights (model.safetensors or pytorch_model.bin)");
    }
    if missing.is_empty() {
        Ok(chosen)
    } else {
        Err(missing)
    }
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

/// A repo's file list at one commit, as `GET /api/models/{id}/revision/{rev}?blobs=true` gives it.
#[derive(Debug, Deserialize)]
struct RepoListing {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    size: Option<u64>,
    lfs: Option<LfsInfo>,
}

#[derive(Debug, Deserialize)]
struct LfsInfo {
    sha256: String,
    size: u64,
}

/// What a downloaded file must match.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    /// LFS files: the content's sha256 (also the hub's etag and blob name).
    Sha256 {
        hex: String,
        size: u64,
    },
    /// Plain git files: the git blob sha1 (`sha1("blob <len>\0" + content)`).
    GitBlob {
        hex: String,
        size: Option<u64>,
    },
    Nothing,
}

impl Sibling {
    fn expected(&self) -> Expected {
        if let Some(lfs) = &self.lfs {
            return Expected::Sha256 {
                hex: lfs.sha256.to_ascii_lowercase(),
                size: lfs.size,
            };
        }
        match &self.blob_id {
            Some(b) if b.len() == 40 => Expected::GitBlob {
                hex: b.to_ascii_lowercase(),
                size: self.size,
            },
            _ => Expected::Nothing,
        }
    }
}

/// A client for one hub endpoint and cache.
pub struct Hub {
    settings: HubSettings,
    api: Api,
}

impl Hub {
    pub fn new(settings: HubSettings) -> HubResult<Self> {
        let api = ApiBuilder::new()
            .with_endpoint(settings.endpoint.clone())
            .with_cache_dir(settings.cache_dir.clone())
            .with_token(settings.token.clone())
            .with_retries(DOWNLOAD_RETRIES)
            .with_progress(false)
            .with_user_agent("mawqif", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| HubError::Protocol {
                what: "the HTTP client".into(),
                reason: e.to_string(),
            })?;
        Ok(Self { settings, api })
    }

    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// The cached snapshot if complete; else download (unless offline).
    pub fn resolve<P: Progress>(
        &self,
        model: &HubModelRef,
        progress: impl FnMut(&str) -> P,
    ) -> HubResult<Snapshot> {
        match cached_snapshot(&self.settings.cache_dir, model) {
            Ok(s) => Ok(s),
            Err(e) if self.settings.offline => Err(e),
            Err(_) => self.download(model, progress),
        }
    }

    /// List the repo at the revision, fetch what is missing, verify, and
    /// point `refs/<revision>` at the commit. `progress(file)` makes the
    /// progress reporter of each file that is fetched.
    pub fn download<P: Progress>(
        &self,
        model: &HubModelRef,
        mut progress: impl FnMut(&str) -> P,
    ) -> HubResult<Snapshot> {
        if self.settings.offline {
            return cached_snapshot(&self.settings.cache_dir, model).map_err(|e| match e {
                HubError::NotCached {
                    repo,
                    revision,
                    cache,
                    missing,
                    ..
                } => HubError::NotCached {
                    repo,
                    revision,
                    cache,
                    missing,
                    why: "HF_HUB_OFFLINE is set",
                },
                other => other,
            });
        }
        let listing = self.list(model)?;
        if !is_commit_sha(&listing.sha) {
            return Err(HubError::Protocol {
                what: format!("{model}"),
                reason: format!("`{}` is not a commit sha", listing.sha),
            });
        }
        let names: Vec<String> = listing
            .siblings
            .iter()
            .map(|s| s.rfilename.clone())
            .collect();
        let files = choose_files(&names).map_err(|missing| HubError::NoUsableFiles {
            repo: model.repo.clone(),
            revision: model.revision.clone(),
            what: missing.join(", "),
            files: if names.is_empty() {
                "nothing".into()
            } else {
                names.join(", ")
            },
        })?;
        let repo_dir = repo_cache_dir(&self.settings.cache_dir, &model.repo);
        let snapshot_dir = repo_dir.join("snapshots").join(&listing.sha);
        let commit_ref = repo_dir.join("refs").join(&listing.sha);
        let had_commit_ref = commit_ref.exists();
        let mut downloaded = Vec::new();
        for file in &files {
            let sibling = listing
                .siblings
                .iter()
                .find(|s| &s.rfilename == file)
                .ok_or_else(|| HubError::Protocol {
                    what: file.clone(),
                    reason: "listed file vanished".into(),
                })?;
            let expected = sibling.expected();
            let pointer = snapshot_dir.join(file);
            if pointer.exists() && size_matches(&pointer, &expected) {
                continue;
            }
            self.fetch(model, &listing.sha, file, &expected, &mut progress)?;
            downloaded.push(file.clone());
        }
        // hf-hub records the ref under the name it was asked for, which was
        // the commit itself; the Python tools record the branch instead.
        write_ref(&repo_dir, &model.revision, &listing.sha)?;
        if !had_commit_ref && model.revision != listing.sha {
            let _ = std::fs::remove_file(&commit_ref);
        }
        Ok(Snapshot {
            model: model.clone(),
            commit: listing.sha,
            dir: snapshot_dir,
            files,
            downloaded,
        })
    }

    fn list(&self, model: &HubModelRef) -> HubResult<RepoListing> {
        let request = self
            .api
            .repo(model.hf_repo(&model.revision))
            .info_request()
            .query("blobs", "true");
        let url = request.url().to_string();
        let response = request
            .call()
            .map_err(|e| self.request_error(model, &url, e))?;
        let mut body = String::new();
        response
            .into_reader()
            .take(64 << 20)
            .read_to_string(&mut body)
            .map_err(|e| HubError::Unreachable {
                endpoint: self.settings.endpoint.clone(),
                reason: e.to_string(),
            })?;
        serde_json::from_str(&body).map_err(|e| HubError::Protocol {
            what: url,
            reason: format!("not a repo listing: {e}"),
        })
    }

    /// Download one file (pinned to `commit`) and verify it; a bad copy is removed.
    fn fetch<P: Progress>(
        &self,
        model: &HubModelRef,
        commit: &str,
        file: &str,
        expected: &Expected,
        progress: &mut impl FnMut(&str) -> P,
    ) -> HubResult<()> {
        let api_repo = self.api.repo(model.hf_repo(commit));
        let mut result = api_repo.download_with_progress(file, progress(file));
        if matches!(result, Err(ApiError::InvalidResume)) {
            // The partial file is longer than the file: start over.
            if let Some(part) = self
                .blob_path(model, expected)
                .map(|b| b.with_extension("part"))
            {
                let _ = std::fs::remove_file(part);
            }
            result = api_repo.download_with_progress(file, progress(file));
        }
        let pointer = result.map_err(|e| self.api_error(model, file, e))?;
        if let Some(lock) = self
            .blob_path(model, expected)
            .map(|b| b.with_extension("lock"))
        {
            let _ = std::fs::remove_file(lock);
        }
        if let Err(e) = verify(&pointer, expected) {
            let blob = std::fs::canonicalize(&pointer).ok();
            let _ = std::fs::remove_file(&pointer);
            if let Some(b) = blob {
                let _ = std::fs::remove_file(b);
            }
            return Err(match e {
                Mismatch::Io(source) => io_err(&pointer, source),
                Mismatch::Value {
                    check,
                    expected,
                    actual,
                } => HubError::Corrupt {
                    repo: model.repo.clone(),
                    file: file.to_string(),
                    check,
                    expected,
                    actual,
                },
            });
        }
        Ok(())
    }

    fn blob_path(&self, model: &HubModelRef, expected: &Expected) -> Option<PathBuf> {
        let name = match expected {
            Expected::Sha256 { hex, .. } | Expected::GitBlob { hex, .. } => hex,
            Expected::Nothing => return None,
        };
        Some(
            repo_cache_dir(&self.settings.cache_dir, &model.repo)
                .join("blobs")
                .join(name),
        )
    }

    fn request_error(&self, model: &HubModelRef, url: &str, error: ureq::Error) -> HubError {
        match error {
            ureq::Error::Status(status, response) => {
                let code = response.header("x-error-code").unwrap_or("").to_string();
                let message = response.header("x-error-message").unwrap_or("").to_string();
                let detail = if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                };
                match (status, code.as_str()) {
                    (_, "RevisionNotFound") => HubError::RevisionNotFound {
                        repo: model.repo.clone(),
                        revision: model.revision.clone(),
                    },
                    (_, "GatedRepo") | (403, _) => HubError::Unauthorized {
                        repo: model.repo.clone(),
                        status,
                        detail,
                    },
                    // The hub answers 401 RepoNotFound for private repos without a token.
                    (401 | 404, "RepoNotFound") | (404, "") => HubError::RepoNotFound {
                        repo: model.repo.clone(),
                        endpoint: self.settings.endpoint.clone(),
                        status,
                        token_note: if self.settings.token.is_some() {
                            " (a token was sent: does it have access?)"
                        } else {
                            " (no token was sent)"
                        },
                    },
                    (401, _) => HubError::Unauthorized {
                        repo: model.repo.clone(),
                        status,
                        detail,
                    },
                    _ => HubError::Http {
                        url: url.to_string(),
                        status,
                        detail,
                    },
                }
            }
            ureq::Error::Transport(t) => HubError::Unreachable {
                endpoint: self.settings.endpoint.clone(),
                reason: t.to_string(),
            },
        }
    }

    fn api_error(&self, model: &HubModelRef, file: &str, error: ApiError) -> HubError {
        let url = self.api.repo(model.hf_repo(&model.revision)).url(file);
        match error {
            ApiError::RequestError(e) => match *e {
                // A transfer that breaks after it started is resumable, not a dead hub.
                ureq::Error::Transport(t) if t.kind() == ureq::ErrorKind::Io => {
                    HubError::Interrupted {
                        repo: model.repo.clone(),
                        file: file.to_string(),
                        reason: t.to_string(),
                    }
                }
                other => self.request_error(model, &url, other),
            },
            ApiError::TooManyRetries(inner) => HubError::Interrupted {
                repo: model.repo.clone(),
                file: file.to_string(),
                reason: format!(
                    "{} retries failed, the last with: {inner}",
                    DOWNLOAD_RETRIES
                ),
            },
            ApiError::IoError(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                HubError::DiskFull {
                    cache: self.settings.cache_dir.clone(),
                }
            }
            ApiError::IoError(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::TimedOut
                ) =>
            {
                HubError::Interrupted {
                    repo: model.repo.clone(),
                    file: file.to_string(),
                    reason: e.to_string(),
                }
            }
            ApiError::IoError(e) => io_err(&self.settings.cache_dir, e),
            ApiError::LockAcquisition(p) => HubError::Locked(p),
            other => HubError::Protocol {
                what: url,
                reason: other.to_string(),
            },
        }
    }
}

fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> HubResult<()> {
    if revision == commit {
        return Ok(());
    }
    let path = repo_dir.join("refs").join(revision);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    crate::model_dir::write_atomic(&path, commit.as_bytes()).map_err(|e| match e {
        crate::MawqifError::Io { path, source } => HubError::Io { path, source },
        other => HubError::Protocol {
            what: path.display().to_string(),
            reason: other.to_string(),
        },
    })
}

fn size_matches(path: &Path, expected: &Expected) -> bool {
    let want = match expected {
        Expected::Sha256 { size, .. } => Some(*size),
        Expected::GitBlob { size, .. } => *size,
        Expected::Nothing => None,
    };
    match (want, std::fs::metadata(path)) {
        (Some(w), Ok(m)) => m.len() == w,
        (None, Ok(_)) => true,
        (_, Err(_)) => false,
    }
}

enum Mismatch {
    Io(std::io::Error),
    Value {
        check: &'static str,
        expected: String,
        actual: String,
    },
}

/// Check size and hash of a downloaded file against the listing.
fn verify(path: &Path, expected: &Expected) -> Result<(), Mismatch> {
    let len = std::fs::metadata(path).map_err(Mismatch::Io)?.len();
    let want_size = match expected {
        Expected::Sha256 { size, .. } => Some(*size),
        Expected::GitBlob { size, .. } => *size,
        Expected::Nothing => None,
    };
    if let Some(w) = want_size {
        if w != len {
            return Err(Mismatch::Value {
                check: "size",
                expected: format!("{w} bytes"),
                actual: format!("{len} bytes"),
            });
        }
    }
    let (check, want, got) = match expected {
        Expected::Sha256 { hex, .. } => {
            let mut h = sha2::Sha256::new();
            hash_file(path, |b| h.update(b)).map_err(Mismatch::Io)?;
            ("sha256", hex, hex_string(&h.finalize()))
        }
        Expected::GitBlob { hex, .. } => {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {len}\0").as_bytes());
            hash_file(path, |b| h.update(b)).map_err(Mismatch::Io)?;
            ("git blob sha1", hex, hex_string(&h.finalize()))
        }
        Expected::Nothing => return Ok(()),
    };
    if *want == got {
        Ok(())
    } else {
        Err(Mismatch::Value {
            check,
            expected: want.clone(),
            actual: got,
        })
    }
}

fn hash_file(path: &Path, mut update: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        update(&buf[..n]);
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_revisions_parse() {
        let reg = Registry::builtin();
        let r = HubModelRef::parse("tiny/test-bert", &reg).unwrap();
        assert_eq!(
            (r.repo.as_str(), r.revision.as_str()),
            ("tiny/test-bert", "main")
        );
        let r = HubModelRef::parse("tiny/test-bert@v1.0", &reg).unwrap();
        assert_eq!(r.revision, "v1.0");
        let r = HubModelRef::parse("CAMeL-Lab/bert-base-arabic-camelbert-msa", &reg).unwrap();
        assert_eq!(r.revision, "5f73f6d061ac7c07950d8f55a9b17dcc7ff8033f");
        for bad in [
            "",
            "noslash",
            "/abs/path",
            "a/b/c",
            "./x",
            "a/b@",
            "a/b@x y",
            "../x",
        ] {
            assert!(HubModelRef::parse(bad, &reg).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_follow_the_python_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let s = HubSettings::from_vars(vars(&[("HOME", "/home/u")]));
        assert_eq!(s.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(s.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert!(!s.offline);
        let s = HubSettings::from_vars(vars(&[
            ("HF_HOME", "/data/hf"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", "hf_x"),
            ("HF_HUB_OFFLINE", "1"),
        ]));
        assert_eq!(s.cache_dir, PathBuf::from("/data/hf/hub"));
        assert_eq!(s.endpoint, "http://127.0.0.1:9");
        assert_eq!(s.token.as_deref(), Some("hf_x"));
        assert!(s.offline);
        let s = HubSettings::from_vars(vars(&[("HF_HOME", "/d"), ("HF_HUB_CACHE", "/c")]));
        assert_eq!(s.cache_dir, PathBuf::from("/c"));
    }

    #[test]
    fn files_are_chosen_by_preference() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            choose_files(&names(&[
                "config.json",
                "vocab.txt",
                "tokenizer_config.json",
                "pytorch_model.bin",
                "tf_model.h5"
            ]))
            .unwrap(),
            names(&[
                "config.json",
                "vocab.txt",
                "tokenizer_config.json",
                "pytorch_model.bin"
            ])
        );
        assert_eq!(
            choose_files(&names(&[
                "config.json",
                "tokenizer.json",
                "vocab.txt",
                "model.safetensors",
                "pytorch_model.bin"
            ]))
            .unwrap(),
            names(&["config.json", "tokenizer.json", "model.safetensors"])
        );
        let missing =
            choose_files(&names(&["config.json", "vocab.txt", "tf_model.h5"])).unwrap_err();
        assert_eq!(
            missing,
            vec!["weights (model.safetensors or pytorch_model.bin)"]
        );
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
        let p = snapshot_profile(&dir, 512).unwrap();
        assert_eq!(p.id, "UBC-NLP/ARBERT");
        assert_eq!(p.revision, sha);
    }

    #[test]
    fn git_blob_hash_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"hello\n").unwrap();
        // `git hash-object` of "hello\n".
        let good = Expected::GitBlob {
            hex: "ce013625030ba8dba906f756967f9e9ca394464a".into(),
            size: Some(6),
        };
        assert!(verify(&f, &good).is_ok());
        let bad = Expected::GitBlob {
            hex: "ce013625030ba8dba906f756967f9e9ca394464b".into(),
            size: Some(6),
        };
        assert!(matches!(verify(&f, &bad), Err(Mismatch::Value { .. })));
        let short = Expected::Sha256 {
            hex: "00".into(),
            size: 7,
        };
        assert!(matches!(
            verify(&f, &short),
            Err(Mismatch::Value { check: "size", .. })
        ));
    }
}
