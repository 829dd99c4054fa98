//! Writing files so that a crash or kill at any moment leaves either the old
//! file or the new one, never a torn one: write a sibling temp file, then
//! rename it over the target (atomic on one filesystem).

use std::path::{Path, PathBuf};

/// A failed write, with the path that failed (the temp file or the target).
#[derive(Debug)]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The sibling temp path used for atomic writes of `path`; the process id
/// keeps concurrent writers of the same file apart.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    replace_with(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|source| WriteError {
            path: tmp.to_path_buf(),
            source,
        })
    })
}

/// Let `write` fill a temp file beside `path`, then rename it into place.
/// On any failure the temp file is removed and `path` is left as it was.
pub fn replace_with<E: From<WriteError>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = tmp_path(path);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        E::from(WriteError {
            path: path.to_path_buf(),
            source,
        })
    })?;
    remove_stale_temps(path);
    Ok(())
}

/// Remove the temp files of `path` that writers killed mid-write left behind
/// (a killed import can leave a model-sized one each time). A temp file is
/// stale when the process its name carries no longer runs, which is checked
/// in /proc; without /proc nothing is removed.
fn remove_stale_temps(path: &Path) {
    let proc = Path::new("/proc");
    let (Some(name), Some(dir)) = (path.file_name().and_then(|n| n.to_str()), path.parent()) else {
        return;
    };
    if !proc.join("self").exists() {
        return;
    }
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let own = std::process::id().to_string();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(name))
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_suffix(".tmp"))
        else {
            continue;
        };
        let is_pid = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
        if is_pid && pid != own && !proc.join(pid).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.bin");
        write_atomic(&target, b"old").unwrap();
        let result: Result<(), WriteError> = replace_with(&target, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(WriteError {
                path: tmp.to_path_buf(),
                source: std::io::Error::other("disk full"),
            })
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }

    #[test]
    fn temp_files_of_dead_writers_are_removed_after_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.bin");
        // pid_max is at most 2^22 on Linux, so this writer cannot be running.
        let dead = dir.path().join("x.bin.99999999.tmp");
        // pid 1 always runs: its write may be in progress, so it stays.
        let running = dir.path().join("x.bin.1.tmp");
        let other = dir.path().join("y.bin.99999999.tmp");
        for p in [&dead, &running, &other] {
            std::fs::write(p, b"half").unwrap();
        }
        write_atomic(&target, b"new").unwrap();
        assert_eq!(dead.exists(), !Path::new("/proc/self").exists());
        assert!(running.exists(), "a running writer's temp was removed");
        assert!(other.exists(), "another file's temp was removed");
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }
}
