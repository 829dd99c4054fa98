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
use std::path::PathBuf;

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::api::Progress;
use hf_hub::{Repo, RepoType};

pub mod cache;
pub mod error;
pub mod listing;

pub use cache::{cached_snapshot, repo_cache_dir, snapshot_identity, Snapshot};
pub use error::{HubError, HubResult};

use cache::{is_commit_sha, write_ref};
use error::io_err;
use listing::{choose_files, size_matches, verify, Expected, Mismatch, RepoListing};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Retries of a broken transfer; each resumes from what has arrived.
const DOWNLOAD_RETRIES: usize = 3;

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
    /// Settings from the variables the Python tools read (`HF_ENDPOINT`,
    /// `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_HUB_OFFLINE`…), looked up
    /// through `var`: the caller decides where they come from.
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
    /// Parse `org/name` or `org/name@REV`. Without `@REV`, the revision
    /// `pinned` gives for the repo (mawqif's registry), else `main`.
    pub fn parse(spec: &str, pinned: impl Fn(&str) -> Option<String>) -> HubResult<Self> {
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
            None => pinned(repo).unwrap_or_else(|| "main".to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_revisions_parse() {
        let pinned = |repo: &str| (repo == "org/pinned").then(|| "abc123".to_string());
        let r = HubModelRef::parse("tiny/test-bert", pinned).unwrap();
        assert_eq!(
            (r.repo.as_str(), r.revision.as_str()),
            ("tiny/test-bert", "main")
        );
        let r = HubModelRef::parse("tiny/test-bert@v1.0", pinned).unwrap();
        assert_eq!(r.revision, "v1.0");
        let r = HubModelRef::parse("org/pinned", pinned).unwrap();
        assert_eq!(r.revision, "abc123");
        let r = HubModelRef::parse("org/pinned@main", pinned).unwrap();
        assert_eq!(r.revision, "main");
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
            assert!(HubModelRef::parse(bad, pinned).is_err(), "{bad}");
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
}
