//! mawqif and the real Python client (`huggingface_hub`) on one mock hub:
//! each reads the other's cache offline, their layouts match link for link,
//! and two downloads of one file at once (one by each) fetch it once.
//!
//! The Python side is `tests/integration/pyhub.py`. `.ci/run` installs
//! `huggingface_hub` into a venv and sets MAWQIF_PYHUB_PYTHON to its python
//! and MAWQIF_REQUIRE_PYHUB=1; elsewhere `python3` is tried, and without the
//! package the tests say SKIPPED on the terminal (not only in captured output).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::common::mock_hub::{hex, MockFile, Seen};
use crate::common::{stderr, stdout, PROXY_VARS};
use crate::hub::{hub_with_tiny_bert, MAIN_SHA, OLD_SHA};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/integration/pyhub.py");
const MAWQIF_FILES: [&str; 3] = ["config.json", "vocab.txt", "model.safetensors"];

/// The python that has `huggingface_hub`, or None after a loud skip.
fn python_client(test: &str) -> Option<PathBuf> {
    let required = std::env::var("MAWQIF_REQUIRE_PYHUB").is_ok_and(|v| v == "1");
    let python = std::env::var_os("MAWQIF_PYHUB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let probe = Command::new(&python)
        .args([SCRIPT, "version", "{}"])
        .output();
    let why = match probe {
        Ok(o) if o.status.success() => return Some(python),
        Ok(o) => stderr(&o).lines().last().unwrap_or("").to_string(),
        Err(e) => e.to_string(),
    };
    assert!(
        !required,
        "MAWQIF_REQUIRE_PYHUB=1 but {} cannot import huggingface_hub: {why}",
        python.display()
    );
    // Straight to the terminal: libtest captures eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: Python's huggingface_hub is not available to {} ({why}); \
         bash .ci/run installs it",
        python.display()
    );
    None
}

/// Python's client with the environment a user would give it.
fn python(
    py: &Path,
    hub_url: &str,
    home: &Path,
    command: &str,
    args: serde_json::Value,
) -> Command {
    let mut cmd = Command::new(py);
    cmd.args([SCRIPT, command, &args.to_string()])
        .env("HF_ENDPOINT", hub_url)
        .env("HF_HOME", home.join("hf"))
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE");
    for var in PROXY_VARS
        .iter()
        .filter(|v| !v.eq_ignore_ascii_case("no_proxy"))
    {
        cmd.env_remove(var);
    }
    cmd
}

fn json_of(what: &str, o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{what}: {}", stderr(o));
    serde_json::from_str(stdout(o).trim()).unwrap_or_else(|e| panic!("{what}: {e}: {}", stdout(o)))
}

fn mawqif(hub_url: &str, home: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mawqif"));
    cmd.args(args)
        .env("HF_ENDPOINT", hub_url)
        .env("HF_HOME", home.join("hf"))
        .env("HF_HUB_CACHE", cache)
        .env("MAWQIF_CACHE", home.join("mawqif"))
        .env("MAWQIF_TRAIN_DATA", "")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE");
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd
}

fn run(what: &str, mut cmd: Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{what}: {}", stderr(&o));
    o
}

fn sha256_of(files: &[MockFile], name: &str, old: bool) -> String {
    let f = files.iter().find(|f| f.name == name).unwrap();
    let mut f = f.clone();
    if old && name == "config.json" {
        f.bytes.extend_from_slice(b"\n"); // as hub_with_tiny_bert makes v1
    }
    f.sha256()
}

/// Every file under `dir`, relative, with the target of each symlink.
fn layout(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if p.is_symlink() {
                out.insert(rel, std::fs::read_link(&p).unwrap().display().to_string());
            } else if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(rel, hex(&sha2::Sha256::digest(&bytes)));
            }
        }
    }
    out
}

#[test]
fn python_and_mawqif_share_one_cache_layout_and_read_each_other_offline() {
    let Some(py) =
        python_client("python_and_mawqif_share_one_cache_layout_and_read_each_other_offline")
    else {
        return;
    };
    let (tmp, mut hub, files) = hub_with_tiny_bert();
    let home = tempfile::tempdir().unwrap();
    let py_cache = home.path().join("py-cache");
    let rs_cache = home.path().join("rs-cache");
    // Both clients fetch main, the tag v1 and a commit pin, with a token.
    for revision in [None, Some("v1"), Some(MAIN_SHA)] {
        let mut args = serde_json::json!({"repo": "tiny/test-bert", "cache": py_cache});
        if let Some(r) = revision {
            args["revision"] = r.into();
        }
        let mut cmd = python(&py, &hub.url, home.path(), "snapshot", args);
        cmd.env("HF_TOKEN", "hf_secret");
        json_of("snapshot_download", &cmd.output().unwrap());
        let spec = match revision {
            Some(r) => format!("tiny/test-bert@{r}"),
            None => "tiny/test-bert".to_string(),
        };
        let mut cmd = mawqif(&hub.url, home.path(), &rs_cache, &["download", &spec]);
        cmd.env("HF_TOKEN", "hf_secret");
        run("mawqif download", cmd);
    }
    // Neither client sent the token to the storage host; both did send it to the hub.
    let leaked: Vec<String> = hub
        .storage_requests()
        .iter()
        .filter(|r| r.authorization().is_some())
        .map(Seen::line)
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    let user_agents: Vec<&str> = ["mawqif/", "hf_hub/"].to_vec();
    let hub_seen = hub.requests();
    for ua in &user_agents {
        let theirs: Vec<&Seen> = hub_seen
            .iter()
            .filter(|r| r.headers.get("user-agent").is_some_and(|u| u.contains(ua)))
            .collect();
        assert!(!theirs.is_empty(), "no request from {ua}");
        assert!(
            theirs
                .iter()
                .all(|r| r.authorization() == Some("Bearer hf_secret")),
            "{ua}"
        );
    }

    // The same layout, link for link, for what mawqif fetches.
    let repo = "models--tiny--test-bert";
    let (py_layout, rs_layout) = (layout(&py_cache.join(repo)), layout(&rs_cache.join(repo)));
    for commit in [MAIN_SHA, OLD_SHA] {
        for f in MAWQIF_FILES {
            let key = format!("snapshots/{commit}/{f}");
            assert!(rs_layout.contains_key(&key), "{key}");
            assert_eq!(py_layout.get(&key), rs_layout.get(&key), "{key}");
            let blob = rs_layout[&key].trim_start_matches("../../").to_string();
            assert_eq!(py_layout.get(&blob), rs_layout.get(&blob), "{blob}");
        }
    }
    let refs = |l: &BTreeMap<String, String>| -> Vec<String> {
        l.keys()
            .filter(|k| k.starts_with("refs/"))
            .cloned()
            .collect()
    };
    assert_eq!(refs(&rs_layout), ["refs/main", "refs/v1"]);
    assert_eq!(refs(&py_layout), refs(&rs_layout));
    for r in ["main", "v1"] {
        assert_eq!(
            std::fs::read(py_cache.join(repo).join("refs").join(r)).unwrap(),
            std::fs::read(rs_cache.join(repo).join("refs").join(r)).unwrap()
        );
    }
    // Both use `.locks/<repo>/<etag>.lock` at the top of the cache.
    for f in MAWQIF_FILES {
        let etag = files.iter().find(|m| m.name == f).unwrap().etag();
        for cache in [&py_cache, &rs_cache] {
            let lock = cache.join(".locks").join(repo).join(format!("{etag}.lock"));
            assert!(lock.is_file(), "{}", lock.display());
        }
    }

    // From here on nothing may use the network.
    hub.stop();
    let dead = hub.url.clone();
    for (cache, who) in [(&rs_cache, "mawqif's"), (&py_cache, "Python's")] {
        for (revision, old) in [(None, false), (Some("v1"), true), (Some(MAIN_SHA), false)] {
            let mut args = serde_json::json!({
                "repo": "tiny/test-bert", "cache": cache, "files": MAWQIF_FILES,
            });
            if let Some(r) = revision {
                args["revision"] = r.into();
            }
            let mut cmd = python(&py, &dead, home.path(), "read-offline", args);
            cmd.env("HF_HUB_OFFLINE", "1");
            let got = json_of(
                &format!("hf_hub_download offline from {who} cache"),
                &cmd.output().unwrap(),
            );
            for f in MAWQIF_FILES {
                assert_eq!(
                    got["files"][f]["sha256"],
                    sha256_of(&files, f, old),
                    "{who} cache, {revision:?}, {f}"
                );
            }
        }
        let scan = json_of(
            &format!("scan_cache_dir of {who} cache"),
            &python(
                &py,
                &dead,
                home.path(),
                "scan",
                serde_json::json!({"cache": cache}),
            )
            .output()
            .unwrap(),
        );
        assert_eq!(scan["warnings"], serde_json::json!([]), "{who} cache");
        let revisions = &scan["repos"][0]["revisions"];
        assert_eq!(scan["repos"][0]["repo_id"], "tiny/test-bert");
        assert_eq!(revisions[0]["commit"], OLD_SHA);
        assert_eq!(revisions[0]["refs"], serde_json::json!(["v1"]), "{who}");
        assert_eq!(revisions[1]["commit"], MAIN_SHA);
        assert_eq!(revisions[1]["refs"], serde_json::json!(["main"]), "{who}");
    }

    // mawqif classifies from either cache offline, with the same output.
    let text = home.path().join("news.txt");
    std::fs::write(
        &text,
        "قال الوزير إن الحكومة ستدعم المشروع. وهذا رأي الكاتب.\n",
    )
    .unwrap();
    let head = tmp.path().join("tiny").join("head");
    let classify = |cache: &Path| {
        let mut cmd = mawqif(
            &dead,
            home.path(),
            cache,
            &[
                "classify",
                "--format",
                "jsonl",
                "--model",
                "tiny/test-bert",
                "--head",
                head.to_str().unwrap(),
                text.to_str().unwrap(),
            ],
        );
        cmd.env("HF_HUB_OFFLINE", "1");
        stdout(&run("mawqif classify offline", cmd))
    };
    let from_python = classify(&py_cache);
    assert_eq!(from_python.lines().count(), 2);
    assert_eq!(from_python, classify(&rs_cache));
}

/// Wait until `seen` holds a request that `wanted` picks, or fail.
fn wait_for(what: &str, seen: impl Fn() -> Vec<Seen>, wanted: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen().iter().any(&wanted) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn still_running(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

#[test]
fn python_and_mawqif_downloading_one_file_at_once_fetch_it_once() {
    let Some(py) = python_client("python_and_mawqif_downloading_one_file_at_once_fetch_it_once")
    else {
        return;
    };
    let (_tmp, hub, files) = hub_with_tiny_bert();
    let weights = files.iter().find(|f| f.lfs).unwrap().clone();
    // The weights take about 4 s to arrive: long enough for the other
    // client to start and ask for the same file meanwhile.
    hub.faults().slow_lfs_ms.store(500, Ordering::SeqCst);
    let weights_head = |from: &'static str| {
        move |r: &Seen| {
            r.method == "HEAD"
                && r.path.ends_with("/model.safetensors")
                && r.headers
                    .get("user-agent")
                    .is_some_and(|u| u.contains(from))
        }
    };
    for mawqif_first in [true, false] {
        let home = tempfile::tempdir().unwrap();
        let cache = home.path().join("cache");
        let gets_before = hub.content_gets(&weights.sha256());
        let storage_before = hub.storage_requests().len();
        let spawn_mawqif = || {
            let mut cmd = mawqif(
                &hub.url,
                home.path(),
                &cache,
                &["download", "tiny/test-bert"],
            );
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            cmd.spawn().unwrap()
        };
        let spawn_python = || {
            let mut cmd = python(
                &py,
                &hub.url,
                home.path(),
                "download-file",
                serde_json::json!({"repo": "tiny/test-bert", "file": "model.safetensors", "cache": cache}),
            );
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            cmd.spawn().unwrap()
        };
        let first_gets = || hub.storage_requests()[storage_before..].to_vec();
        let (mut first, second_ua) = if mawqif_first {
            (spawn_mawqif(), "hf_hub/")
        } else {
            (spawn_python(), "mawqif/")
        };
        wait_for("the first client's transfer", first_gets, |r| {
            r.method == "GET" && r.path.ends_with(&weights.sha256())
        });
        let second = if mawqif_first {
            spawn_python()
        } else {
            spawn_mawqif()
        };
        // The second client asks for the file while the first still writes it.
        wait_for(
            "the second client's HEAD",
            || hub.requests(),
            weights_head(second_ua),
        );
        assert!(
            still_running(&mut first),
            "the first client finished too early to overlap"
        );
        let second_out = second.wait_with_output().unwrap();
        let first_out = first.wait_with_output().unwrap();
        let (m, p) = if mawqif_first {
            (&first_out, &second_out)
        } else {
            (&second_out, &first_out)
        };
        assert!(m.status.success(), "mawqif: {}", stderr(m));
        let from_python = json_of("hf_hub_download", p);
        assert_eq!(from_python["sha256"], weights.sha256());
        // Fetched once: the second client waited on the lock, then used the blob.
        assert_eq!(
            hub.content_gets(&weights.sha256()) - gets_before,
            1,
            "mawqif first: {mawqif_first}; {:?}",
            hub.storage_requests()[storage_before..]
                .iter()
                .map(Seen::line)
                .collect::<Vec<_>>()
        );
        if !mawqif_first {
            assert!(
                stderr(m).contains("another process is downloading model.safetensors"),
                "{}",
                stderr(m)
            );
        }
        let snapshot = PathBuf::from(stdout(m).trim());
        assert_eq!(
            std::fs::read(snapshot.join("model.safetensors")).unwrap(),
            weights.bytes
        );
        // No temp file of either client is left beside the blob.
        let blobs: Vec<String> = std::fs::read_dir(cache.join("models--tiny--test-bert/blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains('.'))
            .collect();
        assert!(blobs.is_empty(), "{blobs:?}");
    }
}
