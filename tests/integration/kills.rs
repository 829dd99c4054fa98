//! SIGKILL at random moments. `mawqif train`, `mawqif import-e5s1` and
//! `mawqif download` (against the mock hub) are each killed [`KILLS`] times
//! after a random delay drawn over the length of an uninterrupted run. After
//! every kill, each file the command writes must be whole (byte for byte the
//! file an uninterrupted run writes, or the one that was there before) or
//! absent. Each run starts from what the kill before it left, so a state that
//! broke the next run would show as a run that fails on its own; every tenth
//! run, and the last, is left to finish and must succeed.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mawqif::rng::SplitMix64;

use crate::common::e5s1_file::{e5s1_bytes, E5s1Spec};
use crate::common::mock_hub::{MockFile, MockHub, MockRepo};

const KILLS: usize = 50;

/// Runs `command(i)` at least KILLS times, killing each after a random delay
/// in [0, `full`), and calls `check(i)` after each. Every tenth run is not
/// killed, and neither is the last. When a loaded machine lets too many runs
/// finish before their kill, it goes on (up to 3 × KILLS runs) until KILLS / 2
/// kills have landed part-way, so the count does not depend on how the one
/// reference run was timed. Returns how many runs the kill cut short.
fn kill_repeatedly(
    what: &str,
    seed: u64,
    full: Duration,
    mut command: impl FnMut(usize) -> Command,
    mut check: impl FnMut(usize),
) -> usize {
    let mut rng = SplitMix64::new(seed);
    let mut killed = 0;
    let mut runs = 0;
    let mut last_was_left_to_finish = false;
    while runs < KILLS || killed < KILLS / 2 || !last_was_left_to_finish {
        assert!(
            runs < 3 * KILLS,
            "{what}: only {killed} of {runs} runs were killed part-way"
        );
        let i = runs;
        runs += 1;
        let enough = i + 1 >= KILLS && killed >= KILLS / 2;
        let let_finish = i % 10 == 9 || enough;
        let mut cmd = command(i);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let delay = full.mul_f64(rng.unit());
        let mut child = cmd.spawn().expect("start mawqif");
        if !let_finish {
            std::thread::sleep(delay);
            // SIGKILL; an error only means the run had already finished.
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("wait for mawqif");
        match out.status.signal() {
            Some(9) => killed += 1,
            _ => assert!(
                out.status.success(),
                "{what}: run {i} failed on its own after the previous kills: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        last_was_left_to_finish = let_finish;
        check(i);
    }
    eprintln!(
        "{what}: {runs} runs, {killed} killed part-way (full run {:.0} ms)",
        full.as_secs_f64() * 1e3
    );
    killed
}

/// The bytes of each file directly in `dir`, by name.
fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Each of `names` in `dir` is absent or byte-equal to one of `allowed`.
fn assert_whole_or_absent(
    dir: &Path,
    names: &[&str],
    allowed: &[&BTreeMap<String, Vec<u8>>],
    context: &str,
) {
    let now = files_in(dir);
    for name in names {
        if let Some(bytes) = now.get(*name) {
            assert!(
                allowed.iter().any(|a| a.get(*name) == Some(bytes)),
                "{context}: {name} is neither the old nor the new file ({} bytes)",
                bytes.len()
            );
        }
    }
}

/// Temp files (`*.tmp`) under `dir`, recursively.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "tmp") {
                out.push(p);
            }
        }
    }
    out
}

fn timed(mut cmd: Command) -> Duration {
    let started = Instant::now();
    let out = cmd.output().expect("run mawqif");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

#[test]
fn train_killed_at_random_points_leaves_whole_files() {
    let (tmp, model) = crate::common::tiny_model_dir();
    let train = |out: &Path, cache: &Path, seed: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mawqif"));
        cmd.args(["train", "--model", model.to_str().unwrap()])
            .args(["--out", out.to_str().unwrap()])
            .args(["--dev-fraction", "0.25", "--epochs", "50", "--seed", seed])
            .args(["a01", "b01", "c01", "d01"].iter().flat_map(|t| {
                [
                    "--data".to_string(),
                    format!("eval/train/gold/{t}.gold.jsonl"),
                ]
            }))
            .env("MAWQIF_CACHE", cache);
        cmd
    };
    // Reference runs: the head before (seed 1) and the one each run writes (seed 2).
    let (old_dir, new_dir) = (tmp.path().join("old"), tmp.path().join("new"));
    let ref_cache = tmp.path().join("ref-cache");
    timed(train(&old_dir, &ref_cache, "1"));
    let _ = std::fs::remove_dir_all(&ref_cache);
    let full = timed(train(&new_dir, &ref_cache, "2"));
    let (old, new) = (files_in(&old_dir), files_in(&new_dir));
    assert_ne!(old["head.safetensors"], new["head.safetensors"]);
    let cache_file = Path::new("embeddings/tiny@local.bin");
    let cache_bytes = std::fs::read(ref_cache.join(cache_file)).unwrap();

    let out = tmp.path().join("out");
    let cache = tmp.path().join("cache");
    copy_dir(&old_dir, &out);
    let head_files = ["head.safetensors", "head.json"];
    kill_repeatedly(
        "train",
        14,
        full,
        |i| {
            // Every other run starts without the embedding cache, so that
            // kills also land while it is computed and written.
            if i % 2 == 0 {
                let _ = std::fs::remove_file(cache.join(cache_file));
            }
            train(&out, &cache, "2")
        },
        |i| {
            assert_whole_or_absent(&out, &head_files, &[&old, &new], &format!("kill {i}"));
            for name in head_files {
                assert!(out.join(name).is_file(), "kill {i}: {name} vanished");
            }
            if let Ok(bytes) = std::fs::read(cache.join(cache_file)) {
                assert!(bytes == cache_bytes, "kill {i}: a torn embedding cache");
            }
        },
    );
    // The last run finished: the new head, loadable, and no temp files left.
    assert_eq!(files_in(&out), new);
    mawqif::head::Head::load(&out).unwrap();
    assert_eq!(temp_files(&out), Vec::<PathBuf>::new());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for (name, bytes) in files_in(from) {
        std::fs::write(to.join(name), bytes).unwrap();
    }
}

#[test]
fn import_e5s1_killed_at_random_points_leaves_whole_files() {
    let tmp = tempfile::tempdir().unwrap();
    let text = crate::common::article();
    // Two files of the same shape with different weights and scores: big
    // enough (about 1 MB) that an import takes a while to write.
    let write = |seed: u64| {
        let path = tmp.path().join(format!("e5s1-{seed}.bin"));
        std::fs::write(&path, e5s1_bytes(&E5s1Spec::from_text(&text, 64, 2, seed))).unwrap();
        path
    };
    let (old_bin, new_bin) = (write(1), write(2));
    let import = |file: &Path, out: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mawqif"));
        cmd.arg("import-e5s1").arg(file).arg("--out").arg(out);
        cmd
    };
    let (old_dir, new_dir) = (tmp.path().join("old"), tmp.path().join("new"));
    timed(import(&old_bin, &old_dir));
    let full = timed(import(&new_bin, &new_dir));
    let (old, new) = (files_in(&old_dir), files_in(&new_dir));
    let names = [
        "config.json",
        "mawqif.json",
        "tokenizer.json",
        "model.safetensors",
    ];
    for name in names {
        assert!(new.contains_key(name), "{name} not written");
    }
    assert_ne!(old["model.safetensors"], new["model.safetensors"]);
    // The same input gives the same bytes, so "whole" can be byte equality.
    let again = tmp.path().join("again");
    timed(import(&new_bin, &again));
    assert_eq!(files_in(&again), new);

    let out = tmp.path().join("out");
    copy_dir(&old_dir, &out);
    let fresh = tmp.path().join("fresh");
    kill_repeatedly(
        "import-e5s1",
        15,
        full,
        |i| {
            // One run in five goes into a new directory, where files may be absent.
            if i % 5 == 0 {
                let _ = std::fs::remove_dir_all(&fresh);
                import(&new_bin, &fresh)
            } else {
                import(&new_bin, &out)
            }
        },
        |i| {
            let context = format!("kill {i}");
            if i % 5 == 0 {
                assert_whole_or_absent(&fresh, &names, &[&new], &context);
            } else {
                assert_whole_or_absent(&out, &names, &[&old, &new], &context);
                for name in names {
                    assert!(out.join(name).is_file(), "{context}: {name} vanished");
                }
            }
        },
    );
    assert_eq!(files_in(&out), new);
    mawqif::model::ModelDir::open(&out).unwrap();
    assert_eq!(temp_files(&out), Vec::<PathBuf>::new());
}

const COMMIT: &str = "2222222222222222222222222222222222222222";

#[test]
fn download_killed_at_random_points_leaves_whole_files() {
    let (_model_tmp, model) = crate::common::tiny_model_dir();
    let files = MockRepo::files_from_dir(&model);
    let hub = MockHub::start(vec![MockRepo {
        id: "tiny/test-bert".into(),
        commits: BTreeMap::from([(COMMIT.to_string(), files.clone())]),
        refs: BTreeMap::from([("main".to_string(), COMMIT.to_string())]),
        ..Default::default()
    }]);
    // Storage bodies come in 8 pieces 15 ms apart (about 0.12 s per file),
    // so kills land mid-transfer.
    hub.faults().slow_lfs_ms.store(15, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let download = |home: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mawqif"));
        cmd.args(["download", "tiny/test-bert"])
            .env("HF_HOME", home.join("hf"))
            .env("HF_ENDPOINT", &hub.url)
            .env("MAWQIF_CACHE", home.join("mawqif"));
        for var in [
            "HF_TOKEN",
            "HF_HUB_OFFLINE",
            "HF_HUB_CACHE",
            "HF_TOKEN_PATH",
        ] {
            cmd.env_remove(var);
        }
        cmd
    };
    let reference = tempfile::tempdir().unwrap();
    let full = timed(download(reference.path()));
    let repo = home.path().join("hf/hub/models--tiny--test-bert");
    kill_repeatedly(
        "download",
        16,
        full,
        |i| {
            // Four runs in five start from an empty cache (a run that finds
            // the files cached ends before most kills); the others resume
            // from what the kill before them left.
            if i % 5 != 4 {
                let _ = std::fs::remove_dir_all(home.path().join("hf"));
            }
            download(home.path())
        },
        |i| check_hub_cache(&repo, &files, &format!("kill {i}")),
    );
    check_hub_cache(&repo, &files, "after the last run");
    // The last run finished: the snapshot is complete and found offline.
    let offline = download(home.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    for name in ["config.json", "vocab.txt", "model.safetensors"] {
        assert!(repo.join("snapshots").join(COMMIT).join(name).is_file());
    }
}

/// The hub cache after a kill: every snapshot entry is whole, every blob's
/// content matches its name, a partial download (`.part`) is a prefix of the
/// file, and `refs/main` is absent or the commit.
fn check_hub_cache(repo: &Path, files: &[MockFile], context: &str) {
    let by_blob: BTreeMap<String, &MockFile> = files.iter().map(|f| (f.etag(), f)).collect();
    for e in std::fs::read_dir(repo.join("blobs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().into_string().unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        let (hash, ext) = match name.split_once('.') {
            Some((h, x)) => (h.to_string(), Some(x.to_string())),
            None => (name.clone(), None),
        };
        let file = by_blob
            .get(&hash)
            .unwrap_or_else(|| panic!("{context}: unknown blob {name}"));
        match ext.as_deref() {
            None => assert!(bytes == file.bytes, "{context}: blob {name} is not whole"),
            Some("part") => assert!(
                file.bytes.starts_with(&bytes),
                "{context}: {name} is not a prefix of the file"
            ),
            Some("lock") => {}
            Some(other) => panic!("{context}: unexpected blob file {name} ({other})"),
        }
    }
    let snapshot = repo.join("snapshots").join(COMMIT);
    for e in std::fs::read_dir(&snapshot).into_iter().flatten().flatten() {
        let name = e.file_name().into_string().unwrap();
        if name.ends_with(".tmp") {
            // A link made beside its place by a writer killed before the
            // rename: not a snapshot entry, and swept by the next write.
            continue;
        }
        let file = files
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{context}: unexpected snapshot entry {name}"));
        let bytes = std::fs::read(e.path())
            .unwrap_or_else(|err| panic!("{context}: snapshot {name} is dangling: {err}"));
        assert!(
            bytes == file.bytes,
            "{context}: snapshot {name} is not whole"
        );
    }
    if let Ok(main) = std::fs::read_to_string(repo.join("refs/main")) {
        assert_eq!(main, COMMIT, "{context}: refs/main is torn");
    }
}

#[test]
fn classify_resume_killed_at_random_points_ends_with_the_uninterrupted_output() {
    let tmp = tempfile::tempdir().unwrap();
    // A JSONL corpus of articles' paragraphs, big enough that a run of the
    // rule baseline takes a while.
    let article = crate::common::article();
    let paragraphs: Vec<&str> = article.lines().filter(|l| !l.trim().is_empty()).collect();
    let corpus: String = (0..3000)
        .map(|k| {
            let text = paragraphs[k % paragraphs.len()];
            serde_json::json!({"id": format!("doc-{k}"), "text": text}).to_string() + "\n"
        })
        .collect();
    let input = tmp.path().join("corpus.jsonl");
    std::fs::write(&input, corpus).unwrap();
    let classify = |out: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mawqif"));
        cmd.args(["classify", "--model", "cues", "--input", "jsonl"])
            .arg(&input)
            .arg("--resume")
            .arg(out);
        cmd
    };
    let reference = tmp.path().join("reference.jsonl");
    let full = timed(classify(&reference));
    let want = std::fs::read(&reference).unwrap();
    assert!(!want.is_empty());

    let out = tmp.path().join("out.jsonl");
    let progress = tmp.path().join("out.jsonl.progress");
    kill_repeatedly(
        "classify --resume",
        17,
        full,
        |i| {
            // Every other run starts over: a resumed run has less left to do
            // and often ends before its kill, and fresh runs keep most kills
            // landing part-way.
            if i % 2 == 0 {
                let _ = std::fs::remove_file(&out);
                let _ = std::fs::remove_file(&progress);
            }
            classify(&out)
        },
        |i| {
            // What the progress log calls final is the uninterrupted run's start.
            let committed = std::fs::read_to_string(&progress)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["offset"].as_u64())
                .next_back()
                .unwrap_or(0) as usize;
            let now = std::fs::read(&out).unwrap_or_default();
            let whole = now.len() >= committed
                && want.len() >= committed
                && now[..committed] == want[..committed];
            if !whole {
                let k = (0..committed.min(now.len()).min(want.len()))
                    .find(|&k| now[k] != want[k])
                    .unwrap_or(0);
                let around = |b: &[u8]| {
                    String::from_utf8_lossy(&b[k.saturating_sub(300)..(k + 100).min(b.len())])
                        .into_owned()
                };
                panic!(
                    "kill {i}: the committed part of the output ({committed} bytes; now {}, \
                     uninterrupted {}) is not whole; first difference at {k}:\n{}\n--- expected:\n{}",
                    now.len(),
                    want.len(),
                    around(&now),
                    around(&want)
                );
            }
        },
    );
    // The last run was not killed: its output is the uninterrupted one.
    assert!(
        std::fs::read(&out).unwrap() == want,
        "resumed output differs"
    );
}
