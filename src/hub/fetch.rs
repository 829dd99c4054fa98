//! One file from the hub into the cache, the way Python's client does it:
//! a HEAD request for the file's commit, etag, size and location; the blob
//! reused if the cache has it; else a download under the lock both clients
//! take (`.locks/<repo folder>/<etag>.lock`), then the snapshot link.
//!
//! mawqif writes the blob to `blobs/<etag>.part` and keeps it when a
//! transfer breaks, so the next attempt (or the next run) resumes from it
//! with a range request. The lock is held while the `.part` file is
//! written, so a `.part` file found under the lock belongs to a process
//! that is gone: it is resumed, however old it is (its content is fixed by
//! the etag, and the whole file is hashed before it takes the blob's name).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::cache::{blob_path, is_safe_etag, link_pointer, lock_path, repo_cache_dir};
use super::error::{io_err, HubError, HubResult};
use super::http::{encode_segment, public_url, redirect_target, HttpError};
use super::listing::{verify, Expected, Mismatch};
use super::{Hub, HubModelRef, Progress, DOWNLOAD_RETRIES};

/// What the hub says about one file at one commit.
struct FileMeta {
    commit: String,
    /// The blob's name: `X-Linked-Etag` (LFS files), else `ETag`.
    etag: String,
    size: Option<u64>,
    /// Where the content is: the storage host a large file redirects to,
    /// else the hub URL itself.
    location: Url,
}

/// Why one transfer stopped.
enum Stop {
    /// The connection broke: retry, resuming from what arrived.
    Broken(String),
    /// Anything else: give up with this error.
    Failed(HubError),
}

impl Hub {
    /// Make `snapshots/<commit>/<file>` point at the file's blob, fetching
    /// the blob only if the cache lacks it. True when content was fetched.
    pub(super) fn fetch_file<P: Progress>(
        &self,
        model: &HubModelRef,
        commit: &str,
        file: &str,
        expected: &Expected,
        progress: &mut impl FnMut(&str) -> P,
    ) -> HubResult<bool> {
        let cache_dir = &self.settings.cache_dir;
        let repo_dir = repo_cache_dir(cache_dir, &model.repo);
        let meta = self.file_metadata(model, commit, file)?;
        if meta.commit != commit {
            return Err(HubError::Protocol {
                what: format!("{}@{commit}: {file}", model.repo),
                reason: format!("the hub answered for commit {}", meta.commit),
            });
        }
        let blobs = repo_dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| io_err(&blobs, e))?;
        // mawqif on hf-hub locked here; nothing uses that file now.
        let _ = std::fs::remove_file(blobs.join(format!("{}.lock", meta.etag)));
        let blob = blob_path(&repo_dir, &meta.etag);
        let size = match expected {
            Expected::Sha256 { size, .. } => Some(*size),
            Expected::GitBlob { size, .. } => *size,
            Expected::Nothing => None,
        }
        .or(meta.size);
        let mut fetched = false;
        if !is_whole(&blob, size) {
            let mut reporter = progress(file);
            let lock = lock_path(cache_dir, &model.repo, &meta.etag);
            let _held = take_lock(&lock, file, &mut reporter)?;
            // Whoever held the lock may have written the blob meanwhile.
            if !is_whole(&blob, size) {
                let _ = std::fs::remove_file(&blob);
                self.download_blob(model, file, &meta, &blob, size, expected, &mut reporter)?;
                fetched = true;
            }
        }
        link_pointer(&repo_dir, commit, file, &meta.etag)?;
        Ok(fetched)
    }

    /// HEAD `<endpoint>/<repo>/resolve/<commit>/<file>`, following
    /// redirects only on the hub (the token must not leave it).
    fn file_metadata(&self, model: &HubModelRef, commit: &str, file: &str) -> HubResult<FileMeta> {
        let path: Vec<String> = file.split('/').map(encode_segment).collect();
        let url = self.url(&format!(
            "{}/resolve/{}/{}",
            model.repo,
            encode_segment(commit),
            path.join("/")
        ))?;
        let (asked, response) = self
            .client
            .send_on_hub("HEAD", &url)
            .map_err(|e| self.http_error(model, e))?;
        let header = |name: &str| {
            response
                .header(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let missing = |what: &str| HubError::Protocol {
            what: public_url(&asked),
            reason: format!(
                "the answer has no {what} header: is HF_ENDPOINT a Hugging Face hub? \
                 (a proxy or firewall can also strip it)"
            ),
        };
        let commit = header("X-Repo-Commit")
            .ok_or_else(|| missing("X-Repo-Commit"))?
            .to_string();
        let etag = header("X-Linked-Etag")
            .or_else(|| header("ETag"))
            .map(normalize_etag)
            .ok_or_else(|| missing("ETag"))?;
        if !is_safe_etag(&etag) {
            return Err(HubError::Protocol {
                what: public_url(&asked),
                reason: format!("the etag `{etag}` cannot name a file"),
            });
        }
        let redirected = (300..400).contains(&response.status());
        let size = header("X-Linked-Size")
            .or_else(|| header("Content-Length").filter(|_| !redirected))
            .and_then(|v| v.parse().ok());
        let location = match redirect_target(&asked, &response) {
            Ok(Some(target)) => target,
            Ok(None) => asked.clone(),
            Err(e) => return Err(self.http_error(model, e)),
        };
        Ok(FileMeta {
            commit,
            etag,
            size,
            location,
        })
    }

    /// Download into `blobs/<etag>.part` (resuming what is there), verify,
    /// and rename to the blob. Broken transfers are retried, each resuming.
    #[allow(clippy::too_many_arguments)]
    fn download_blob<P: Progress>(
        &self,
        model: &HubModelRef,
        file: &str,
        meta: &FileMeta,
        blob: &Path,
        size: Option<u64>,
        expected: &Expected,
        progress: &mut P,
    ) -> HubResult<()> {
        let part = part_path(blob);
        let interrupted = |reason: String| HubError::Interrupted {
            repo: model.repo.clone(),
            file: file.to_string(),
            reason,
        };
        let mut requests = 0usize;
        loop {
            let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            if size.is_some_and(|s| have > s) {
                // Longer than the file: it cannot be a start of it.
                let _ = std::fs::remove_file(&part);
                have = 0;
            }
            if have > 0 && size == Some(have) {
                break; // everything arrived before; only the check is left
            }
            requests += 1;
            match self.transfer(model, file, &meta.location, &part, have, size, progress) {
                Ok(()) => break,
                Err(Stop::Failed(e)) => return Err(e),
                Err(Stop::Broken(_)) if requests <= DOWNLOAD_RETRIES => {
                    std::thread::sleep(backoff(requests));
                }
                Err(Stop::Broken(reason)) => {
                    return Err(interrupted(format!(
                        "{requests} requests failed ({} retries, each resuming from what had \
                         arrived), the last with: {reason}",
                        requests - 1
                    )))
                }
            }
        }
        if let Err(e) = verify(&part, expected) {
            let _ = std::fs::remove_file(&part);
            return Err(match e {
                Mismatch::Io(source) => io_err(&part, source),
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
        std::fs::rename(&part, blob).map_err(|e| io_err(blob, e))
    }

    /// One GET of the content from byte `from`, appended to `part`.
    #[allow(clippy::too_many_arguments)]
    fn transfer<P: Progress>(
        &self,
        model: &HubModelRef,
        file: &str,
        location: &Url,
        part: &Path,
        from: u64,
        size: Option<u64>,
        progress: &mut P,
    ) -> Result<(), Stop> {
        let range = (from > 0).then_some(from);
        let (url, response) = match self.client.get_content(location, range) {
            Ok(answer) => answer,
            Err(HttpError::Ureq { error, .. }) if matches!(*error, ureq::Error::Transport(_)) => {
                return Err(Stop::Broken(error.to_string()));
            }
            Err(HttpError::Ureq { error, .. }) if matches!(*error, ureq::Error::Status(416, _)) => {
                // The server has no byte `from`: what is there is not a start of the file.
                let _ = std::fs::remove_file(part);
                return Err(Stop::Broken(
                    "the partial file did not fit; starting over".into(),
                ));
            }
            Err(e) => return Err(Stop::Failed(self.http_error(model, e))),
        };
        let start = match response.status() {
            206 => {
                let content_range = response.header("Content-Range").unwrap_or("");
                if !content_range.starts_with(&format!("bytes {from}-")) {
                    return Err(Stop::Failed(HubError::Protocol {
                        what: public_url(&url),
                        reason: format!(
                            "asked for bytes from {from}, got Content-Range `{content_range}`"
                        ),
                    }));
                }
                from
            }
            // The server ignored the range: the whole file comes again.
            200 => 0,
            status => {
                return Err(Stop::Failed(HubError::Protocol {
                    what: public_url(&url),
                    reason: format!("HTTP {status} instead of the file's content"),
                }))
            }
        };
        let total = size.or_else(|| {
            response
                .header("Content-Length")
                .and_then(|v| v.parse::<u64>().ok())
                .map(|n| n + start)
        });
        let write_err = |e: std::io::Error| {
            Stop::Failed(if e.kind() == std::io::ErrorKind::StorageFull {
                HubError::DiskFull {
                    cache: self.settings.cache_dir.clone(),
                }
            } else {
                io_err(part, e)
            })
        };
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(start == 0)
            .append(start > 0)
            .open(part)
            .map_err(write_err)?;
        progress.start(file, total.unwrap_or(0), start);
        let mut body = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut written = start;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.flush().map_err(write_err)?;
                    return Err(Stop::Broken(e.to_string()));
                }
            };
            out.write_all(&buf[..n]).map_err(write_err)?;
            written += n as u64;
            progress.advance(n as u64);
        }
        out.flush().map_err(write_err)?;
        if let Some(t) = total.filter(|t| written < *t) {
            return Err(Stop::Broken(format!(
                "the connection closed after {written} of {t} bytes"
            )));
        }
        progress.finish();
        Ok(())
    }
}

/// `blobs/<etag>.part`.
fn part_path(blob: &Path) -> PathBuf {
    let mut name = blob.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    blob.with_file_name(name)
}

fn is_whole(blob: &Path, size: Option<u64>) -> bool {
    match (std::fs::metadata(blob), size) {
        (Ok(m), Some(s)) => m.is_file() && m.len() == s,
        (Ok(m), None) => m.is_file(),
        (Err(_), _) => false,
    }
}

/// `"abc"`, `W/"abc"` → `abc`.
fn normalize_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// Waits between attempts: 0.25 s, 0.5 s, 1 s…, at most 4 s.
fn backoff(attempt: usize) -> Duration {
    let shift = attempt.saturating_sub(1).min(4) as u32;
    Duration::from_millis(250u64 << shift).min(Duration::from_secs(4))
}

/// Take the `flock` lock Python's client also takes for this blob (its
/// `filelock` uses `flock` on Unix), waiting while another process holds
/// it. The lock file stays (as Python leaves it): removing it could let a
/// third process lock a new file while a waiter holds the old one. On a
/// filesystem without `flock` the download goes on unlocked, as Python's
/// soft-lock fallback would not see ours anyway; the hash check still keeps
/// a mixed-up file out of the cache.
fn take_lock<P: Progress>(
    path: &Path,
    file: &str,
    progress: &mut P,
) -> HubResult<Option<std::fs::File>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        // Group-writable like Python's, so users sharing a cache can wait on it.
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o664);
    }
    let lock = options.open(path).map_err(|e| io_err(path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => {
            progress.waiting(file, path);
            lock.lock().map_err(|e| io_err(path, e))?;
            Ok(Some(lock))
        }
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            Ok(None)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_waits() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("abc"), "abc");
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(3), Duration::from_secs(1));
        assert_eq!(backoff(40), Duration::from_secs(4));
        assert_eq!(
            part_path(Path::new("/c/blobs/abc")),
            PathBuf::from("/c/blobs/abc.part")
        );
    }

    #[test]
    fn a_held_lock_makes_the_second_taker_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".locks/models--a--b/e.lock");
        let first = take_lock(&path, "f", &mut ()).unwrap().unwrap();
        struct Waits(std::sync::mpsc::Sender<()>);
        impl Progress for Waits {
            fn start(&mut self, _: &str, _: u64, _: u64) {}
            fn advance(&mut self, _: u64) {}
            fn finish(&mut self) {}
            fn waiting(&mut self, _: &str, _: &Path) {
                let _ = self.0.send(());
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let second = std::thread::spawn(move || {
            let got = take_lock(&p, "f", &mut Waits(tx)).unwrap();
            got.is_some()
        });
        // The second taker reports that it waits, and does not get through.
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!second.is_finished());
        drop(first);
        assert!(second.join().unwrap());
        assert!(path.exists(), "the lock file stays, as Python leaves it");
    }
}
