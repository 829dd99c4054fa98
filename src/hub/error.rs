//! Errors of the hub client. A leaf: they name hub things only (repos,
//! revisions, files, the cache), so the client can be used on its own.

use std::path::{Path, PathBuf};

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
        "cannot reach the hub at {endpoint}: {reason}. Check the network, HF_ENDPOINT and \
         the proxy variables (HTTPS_PROXY, NO_PROXY); models already in the cache work with \
         HF_HUB_OFFLINE=1"
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

    #[error(
        "HF_ENDPOINT `{endpoint}` is not usable ({reason}): give the hub's URL, \
         like https://huggingface.co"
    )]
    BadEndpoint { endpoint: String, reason: String },

    #[error(
        "the proxy {proxy} cannot be used: {reason}. Check HTTPS_PROXY, HTTP_PROXY and \
         ALL_PROXY (an http:// proxy URL), or list the hub's host in NO_PROXY"
    )]
    BadProxy { proxy: String, reason: String },

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

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> HubError {
    HubError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl From<crate::files::WriteError> for HubError {
    fn from(e: crate::files::WriteError) -> Self {
        io_err(&e.path, e.source)
    }
}
