//! Output that survives a kill: units are appended to OUT, and after each
//! document is complete and flushed, a line `{"offset", "key"}` is appended
//! to `OUT.progress`. A new run truncates OUT to the last recorded offset
//! (dropping a document cut off halfway) and skips the recorded keys, so
//! the final output is that of an uninterrupted run.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{MawqifError, Result};

#[derive(Serialize, Deserialize)]
struct Committed {
    offset: u64,
    key: String,
}

/// An output file and its progress log.
pub struct ResumableOutput {
    path: PathBuf,
    out: BufWriter<File>,
    progress: File,
    progress_path: PathBuf,
    done: HashSet<String>,
}

/// The progress log of `out`.
pub fn progress_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".progress");
    out.with_file_name(name)
}

impl ResumableOutput {
    /// Open `out` to continue (or start) a run.
    pub fn open(out: &Path) -> Result<Self> {
        let progress_path = progress_path(out);
        let mut done = HashSet::new();
        let mut offset = 0;
        match std::fs::read_to_string(&progress_path) {
            Ok(text) => {
                // A kill can cut the last line short. Drop that torn tail from
                // the file, or the next commit would be glued to it and both
                // lines lost (found by the kill test, tests/integration/kills.rs).
                let whole = text.rfind('\n').map_or(0, |k| k + 1);
                if whole < text.len() {
                    OpenOptions::new()
                        .write(true)
                        .open(&progress_path)
                        .and_then(|f| f.set_len(whole as u64))
                        .map_err(|e| MawqifError::io(&progress_path, e))?;
                }
                for line in text[..whole].lines() {
                    // A line cut off by a kill is not a commit.
                    if let Ok(c) = serde_json::from_str::<Committed>(line) {
                        offset = c.offset;
                        done.insert(c.key);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::metadata(out).is_ok_and(|m| m.len() > 0) {
                    return Err(MawqifError::malformed(
                        out,
                        format!(
                            "it exists but has no {} beside it, so it was not written by --resume: \
                             remove it or pick another output file",
                            progress_path.display()
                        ),
                    ));
                }
            }
            Err(e) => return Err(MawqifError::io(&progress_path, e)),
        }
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(out)
            .map_err(|e| MawqifError::io(out, e))?;
        let len = file.metadata().map_err(|e| MawqifError::io(out, e))?.len();
        if len < offset {
            return Err(MawqifError::malformed(
                out,
                format!("it is shorter ({len} bytes) than its progress log says ({offset}): was it edited?"),
            ));
        }
        file.set_len(offset).map_err(|e| MawqifError::io(out, e))?;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(|e| MawqifError::io(out, e))?;
        let progress = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&progress_path)
            .map_err(|e| MawqifError::io(&progress_path, e))?;
        Ok(Self {
            path: out.to_path_buf(),
            out: BufWriter::new(file),
            progress,
            progress_path,
            done,
        })
    }

    /// Documents completed by earlier runs.
    pub fn is_done(&self, key: &str) -> bool {
        self.done.contains(key)
    }

    /// The keys of the documents completed so far.
    pub fn done_keys(&self) -> HashSet<String> {
        self.done.clone()
    }

    pub fn completed(&self) -> usize {
        self.done.len()
    }

    pub fn writer(&mut self) -> &mut BufWriter<File> {
        &mut self.out
    }

    /// Record that everything written so far, up to the end of `key`, is final.
    pub fn commit(&mut self, key: &str) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| MawqifError::io(&self.path, e))?;
        let offset = self
            .out
            .get_mut()
            .stream_position()
            .map_err(|e| MawqifError::io(&self.path, e))?;
        let line = serde_json::to_string(&Committed {
            offset,
            key: key.to_string(),
        })?;
        // One write of the whole line, newline included.
        self.progress
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| MawqifError::io(&self.progress_path, e))?;
        self.done.insert(key.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_document_is_dropped_and_done_ones_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        {
            let mut r = ResumableOutput::open(&out).unwrap();
            writeln!(r.writer(), "a1").unwrap();
            r.commit("a").unwrap();
            // "b" is cut off: written but never committed.
            writeln!(r.writer(), "b1").unwrap();
            r.writer().flush().unwrap();
        }
        // A torn progress line is not a commit.
        std::fs::OpenOptions::new()
            .append(true)
            .open(progress_path(&out))
            .unwrap()
            .write_all(b"{\"offset\": 9")
            .unwrap();
        let mut r = ResumableOutput::open(&out).unwrap();
        assert!(r.is_done("a") && !r.is_done("b"));
        writeln!(r.writer(), "b1").unwrap();
        r.commit("b").unwrap();
        drop(r);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a1\nb1\n");
        // The torn tail is gone, so the commit of "b" stands on its own line
        // (glued to the tail, both were lost and "b" was written twice).
        let r = ResumableOutput::open(&out).unwrap();
        assert!(r.is_done("a") && r.is_done("b"));
    }

    #[test]
    fn a_whole_commit_cut_before_its_newline_is_kept_and_not_glued() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        let mut r = ResumableOutput::open(&out).unwrap();
        writeln!(r.writer(), "a1").unwrap();
        r.commit("a").unwrap();
        drop(r);
        // A kill between a commit's JSON and its newline.
        std::fs::OpenOptions::new()
            .append(true)
            .open(progress_path(&out))
            .unwrap()
            .write_all(b"{\"offset\":3,\"key\":\"b\"}")
            .unwrap();
        let mut r = ResumableOutput::open(&out).unwrap();
        assert!(!r.is_done("b"), "a commit without its newline counted");
        writeln!(r.writer(), "b1").unwrap();
        r.commit("b").unwrap();
        writeln!(r.writer(), "c1").unwrap();
        r.commit("c").unwrap();
        drop(r);
        let r = ResumableOutput::open(&out).unwrap();
        assert!(r.is_done("a") && r.is_done("b") && r.is_done("c"));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a1\nb1\nc1\n");
    }

    #[test]
    fn a_foreign_output_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        std::fs::write(&out, "precious\n").unwrap();
        assert!(ResumableOutput::open(&out).is_err());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious\n");
    }
}
