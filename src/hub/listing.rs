//! What the hub lists for a repo at a revision, which of its files mawqif
//! fetches, and how a fetched file is checked against the listing.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use sha2::Digest;

use super::error::{HubError, HubResult};

/// A repo's file list at one commit, as `GET /api/models/{id}/revision/{rev}?blobs=true` gives it.
#[derive(Debug, Deserialize)]
pub struct RepoListing {
    pub sha: String,
    pub siblings: Vec<Sibling>,
}

#[derive(Debug, Deserialize)]
pub struct Sibling {
    pub rfilename: String,
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

/// Parse a listing's body (`what`, the URL it came from, is named in
/// errors). The commit and every hash are checked here: they become cache
/// paths (`snapshots/<sha>`, `blobs/<hash>`), so each must be plain hex of
/// the right length, never a path.
pub fn parse_listing(body: &str, what: &str) -> HubResult<RepoListing> {
    let protocol = |reason: String| HubError::Protocol {
        what: what.to_string(),
        reason,
    };
    let listing: RepoListing =
        serde_json::from_str(body).map_err(|e| protocol(format!("not a repo listing: {e}")))?;
    if !is_commit_sha(&listing.sha) {
        return Err(protocol(format!("`{}` is not a commit sha", listing.sha)));
    }
    for sibling in &listing.siblings {
        if let Some(lfs) = &sibling.lfs {
            if !is_hex(&lfs.sha256, 64) {
                return Err(protocol(format!(
                    "{}: lfs sha256 `{}` is not 64 hex digits",
                    sibling.rfilename, lfs.sha256
                )));
            }
        }
        if let Some(blob) = &sibling.blob_id {
            if !is_hex(blob, 40) {
                return Err(protocol(format!(
                    "{}: blobId `{blob}` is not 40 hex digits",
                    sibling.rfilename
                )));
            }
        }
    }
    Ok(listing)
}

pub(crate) fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a downloaded file must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
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
    /// The size and hash the downloaded file must have.
    pub fn expected(&self) -> Expected {
        if let Some(lfs) = &self.lfs {
            return Expected::Sha256 {
                hex: lfs.sha256.to_ascii_lowercase(),
                size: lfs.size,
            };
        }
        match &self.blob_id {
            Some(b) if is_hex(b, 40) => Expected::GitBlob {
                hex: b.to_ascii_lowercase(),
                size: self.size,
            },
            _ => Expected::Nothing,
        }
    }
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

pub(crate) fn size_matches(path: &Path, expected: &Expected) -> bool {
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

pub(crate) enum Mismatch {
    Io(std::io::Error),
    Value {
        check: &'static str,
        expected: String,
        actual: String,
    },
}

/// Check size and hash of a downloaded file against the listing.
pub(crate) fn verify(path: &Path, expected: &Expected) -> Result<(), Mismatch> {
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
    fn listings_with_paths_for_hashes_are_refused() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let listing = |sibling: &str| format!(r#"{{"sha":"{sha}","siblings":[{sibling}]}}"#);
        let ok = parse_listing(
            &listing(&format!(
                r#"{{"rfilename":"model.safetensors","blobId":"{sha}","lfs":{{"sha256":"{}","size":3}}}}"#,
                "ab".repeat(32)
            )),
            "u",
        )
        .unwrap();
        assert_eq!(
            ok.siblings[0].expected(),
            Expected::Sha256 {
                hex: "ab".repeat(32),
                size: 3
            }
        );
        for bad in [
            // Each of these would have named a path outside blobs/.
            format!(
                r#"{{"rfilename":"m","lfs":{{"sha256":"../../{}","size":3}}}}"#,
                "a".repeat(58)
            ),
            format!(r#"{{"rfilename":"m","blobId":"../../{}"}}"#, "a".repeat(34)),
            r#"{"rfilename":"m","blobId":"short"}"#.to_string(),
        ] {
            let err = parse_listing(&listing(&bad), "http://hub/x").unwrap_err();
            assert!(err.to_string().contains("http://hub/x"), "{err}");
        }
        let err = parse_listing(r#"{"sha":"main","siblings":[]}"#, "u").unwrap_err();
        assert!(err.to_string().contains("not a commit sha"), "{err}");
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
