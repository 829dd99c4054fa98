//! Models from the Hugging Face hub, kept in the standard hub cache
//! (`<cache>/models--org--name/{blobs,snapshots,refs}`) so that the Python
//! tools and mawqif share one copy.
//!
//! Contract: [`Hub::download`] lists the repo at a revision, pins the
//! commit, and picks the files mawqif needs ([`choose_files`]). For each
//! file the snapshot lacks it asks the hub for the file's metadata (a HEAD
//! request, as Python's client does) and links the blob if the cache has it
//! (any revision may have brought it); else it downloads the blob under the
//! lock Python also takes, into a resumable `.part` file, checks it against
//! the size and hash the listing gives, and renames it into place. Then it
//! records the revision → commit ref. [`cached_snapshot`] finds a complete
//! snapshot without the network; [`Hub::resolve`] uses the cache first and
//! downloads only what is missing.
//!
//! The HTTP is our own, on `ureq` ([`http`]), not `hf-hub`'s: hf-hub 0.4
//! re-requested the redirect target of every large file with the client that
//! carries the token (a `Range: bytes=0-0` probe), so the token reached the
//! storage host, and it has no setting to stop that. It also locked blobs in
//! `blobs/<etag>.lock`, where Python's client does not look, and wrote
//! `refs/<sha>` for commit pins. Owning the requests lets every one of them
//! decide whether the token goes with it (only to the hub's origin).

use std::io::Read;
use std::path::PathBuf;

use url::Url;

pub mod cache;
pub mod error;
mod fetch;
pub mod http;
pub mod listing;

pub use cache::{cached_snapshot, repo_cache_dir, snapshot_identity, Snapshot};
pub use error::{HubError, HubResult};
pub use http::ProxySettings;

use cache::write_ref;
use http::{public_url, Client, HttpError};
use listing::{choose_files, parse_listing, size_matches, RepoListing};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Retries of a broken transfer; each resumes from what has arrived.
const DOWNLOAD_RETRIES: usize = 3;

/// Reports one file's download. `()` reports nothing.
pub trait Progress {
    /// A transfer of `file` starts (again, after a retry): `size` bytes in
    /// all (0 when unknown), `done` of them already in the cache.
    fn start(&mut self, file: &str, size: u64, done: u64);
    fn advance(&mut self, bytes: u64);
    fn finish(&mut self);
    /// Another process (mawqif, or Python's client) holds the lock of this
    /// file's blob; the download waits for it, then uses what it wrote.
    fn waiting(&mut self, _file: &str, _lock: &std::path::Path) {}
}

impl Progress for () {
    fn start(&mut self, _: &str, _: u64, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
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
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY` (either case).
    pub proxy: ProxySettings,
}

impl HubSettings {
    /// Settings from the variables the Python tools read (`HF_ENDPOINT`,
    /// `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_HUB_OFFLINE`, the proxy
    /// variables…), looked up through `var`: the caller decides where they
    /// come from.
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
        // The lowercase forms first, as curl and Python's urllib read them.
        let first = |names: &[&str]| names.iter().find_map(|n| var(n));
        let all = first(&["all_proxy", "ALL_PROXY"]);
        let proxy = ProxySettings {
            https: first(&["https_proxy", "HTTPS_PROXY"]).or_else(|| all.clone()),
            http: first(&["http_proxy", "HTTP_PROXY"]).or(all),
            no_proxy: first(&["no_proxy", "NO_PROXY"])
                .map(|v| v.split(',').map(|h| h.trim().to_string()).collect())
                .unwrap_or_default(),
        };
        Self {
            endpoint,
            cache_dir,
            token,
            offline,
            proxy,
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
    endpoint: Url,
    client: Client,
}

impl Hub {
    pub fn new(settings: HubSettings) -> HubResult<Self> {
        let bad = |reason: String| HubError::BadEndpoint {
            endpoint: settings.endpoint.clone(),
            reason,
        };
        let endpoint = Url::parse(&settings.endpoint).map_err(|e| bad(e.to_string()))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
            return Err(bad("not an http(s) URL".into()));
        }
        let client = Client::new(&endpoint, settings.token.clone(), settings.proxy.clone());
        Ok(Self {
            settings,
            endpoint,
            client,
        })
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
        // parse_listing checked that the commit is a real sha (it names a folder).
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
            if self.fetch_file(model, &listing.sha, file, &expected, &mut progress)? {
                downloaded.push(file.clone());
            }
        }
        cache::tag_cache_dir(&self.settings.cache_dir);
        // Like Python: a branch or tag gets a ref, a commit pin does not.
        write_ref(&repo_dir, &model.revision, &listing.sha)?;
        Ok(Snapshot {
            model: model.clone(),
            commit: listing.sha,
            dir: snapshot_dir,
            files,
            downloaded,
        })
    }

    /// `<endpoint>/<path>`: the endpoint may carry a path of its own (a mirror).
    fn url(&self, path: &str) -> HubResult<Url> {
        let base = self.endpoint.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{path}")).map_err(|e| HubError::Protocol {
            what: format!("{base}/{path}"),
            reason: e.to_string(),
        })
    }

    fn list(&self, model: &HubModelRef) -> HubResult<RepoListing> {
        let mut url = self.url(&format!(
            "api/models/{}/revision/{}",
            model.repo,
            http::encode_segment(&model.revision)
        ))?;
        url.set_query(Some("blobs=true"));
        let (asked, response) = self
            .client
            .send_on_hub("GET", &url)
            .map_err(|e| self.http_error(model, e))?;
        if response.status() != 200 {
            return Err(HubError::Protocol {
                what: public_url(&asked),
                reason: format!("HTTP {} instead of a repo listing", response.status()),
            });
        }
        let mut body = String::new();
        response
            .into_reader()
            .take(64 << 20)
            .read_to_string(&mut body)
            .map_err(|e| HubError::Unreachable {
                endpoint: self.settings.endpoint.clone(),
                reason: e.to_string(),
            })?;
        parse_listing(&body, &public_url(&asked))
    }

    /// A failed request as a hub error that says what to do.
    fn http_error(&self, model: &HubModelRef, error: HttpError) -> HubError {
        let (url, error, proxy) = match error {
            HttpError::Hub(e) => return e,
            HttpError::Ureq { url, error, proxy } => (url, *error, proxy),
        };
        let on_hub = self.client.on_hub(&url);
        match error {
            ureq::Error::Status(status, response) => {
                let code = response.header("x-error-code").unwrap_or("").to_string();
                let message = response.header("x-error-message").unwrap_or("").to_string();
                let detail = if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                };
                if !on_hub {
                    // A storage host's refusal says nothing about the repo.
                    return HubError::Http {
                        url: public_url(&url),
                        status,
                        detail,
                    };
                }
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
                        url: public_url(&url),
                        status,
                        detail,
                    },
                }
            }
            ureq::Error::Transport(t) => HubError::Unreachable {
                endpoint: if on_hub {
                    self.settings.endpoint.clone()
                } else {
                    public_url(&url)
                },
                reason: match proxy {
                    Some(p) => format!("{t} (through the proxy {p})"),
                    None => t.to_string(),
                },
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
        assert_eq!(s.proxy, ProxySettings::default());
        let s = HubSettings::from_vars(vars(&[("HF_HOME", "/d"), ("HF_HUB_CACHE", "/c")]));
        assert_eq!(s.cache_dir, PathBuf::from("/c"));
        let s = HubSettings::from_vars(vars(&[
            ("ALL_PROXY", "http://all:1"),
            ("https_proxy", "http://lower:2"),
            ("HTTPS_PROXY", "http://upper:3"),
            ("NO_PROXY", "a.example, b.example"),
        ]));
        assert_eq!(s.proxy.https.as_deref(), Some("http://lower:2"));
        assert_eq!(s.proxy.http.as_deref(), Some("http://all:1"));
        assert_eq!(s.proxy.no_proxy, ["a.example", "b.example"]);
    }
}
