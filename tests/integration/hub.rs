//! `hub` against the in-process mock hub (tests/common/mock_hub.rs): mawqif's
//! own client code, over HTTP on 127.0.0.1 (a hub origin and a separate
//! storage origin), with no internet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::common::mock_hub::{MockFile, MockHub, MockRepo};
use crate::common::PROXY_VARS;
use mawqif::hub::{
    cached_snapshot, Hub, HubError, HubModelRef, HubSettings, ProxySettings, Snapshot,
};
use mawqif::model::resolve::hub_ref;
use mawqif::{Embedder, Engine, RunOptions};

pub const MAIN_SHA: &str = "1111111111111111111111111111111111111111";
pub const OLD_SHA: &str = "0000000000000000000000000000000000000aaa";

/// A hub with `tiny/test-bert` (main, and tag v1 at an older commit whose
/// config.json differs), a private copy, a gated copy and a repo without weights.
pub fn hub_with_tiny_bert() -> (tempfile::TempDir, MockHub, Vec<MockFile>) {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let files = MockRepo::files_from_dir(&dir);
    let mut old = files.clone();
    for f in &mut old {
        if f.name == "config.json" {
            f.bytes.extend_from_slice(b"\n");
        }
    }
    let commits = BTreeMap::from([
        (MAIN_SHA.to_string(), files.clone()),
        (OLD_SHA.to_string(), old),
    ]);
    let refs = BTreeMap::from([
        ("main".to_string(), MAIN_SHA.to_string()),
        ("v1".to_string(), OLD_SHA.to_string()),
    ]);
    let tiny = MockRepo {
        id: "tiny/test-bert".into(),
        commits: commits.clone(),
        refs: refs.clone(),
        ..Default::default()
    };
    let private = MockRepo {
        id: "tiny/private-bert".into(),
        private_token: Some("hf_secret".into()),
        ..tiny.clone()
    };
    let gated = MockRepo {
        id: "tiny/gated-bert".into(),
        gated_token: Some("hf_secret".into()),
        ..tiny.clone()
    };
    let no_weights = MockRepo {
        id: "tiny/no-weights".into(),
        commits: BTreeMap::from([(
            MAIN_SHA.to_string(),
            files.iter().filter(|f| !f.lfs).cloned().collect(),
        )]),
        refs,
        ..Default::default()
    };
    let hub = MockHub::start(vec![tiny, private, gated, no_weights]);
    (tmp, hub, files)
}

fn settings(hub: &MockHub, cache: &Path) -> HubSettings {
    HubSettings {
        endpoint: hub.url.clone(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
        proxy: ProxySettings::default(),
    }
}

fn weights(files: &[MockFile]) -> &MockFile {
    files.iter().find(|f| f.lfs).unwrap()
}

/// No request the storage origin saw carried a token.
fn assert_no_token_reached_storage(hub: &MockHub) {
    let leaked: Vec<String> = hub
        .storage_requests()
        .iter()
        .filter(|r| r.authorization().is_some())
        .map(|r| r.line())
        .collect();
    assert!(
        leaked.is_empty(),
        "token sent to the storage host: {leaked:?}"
    );
}

fn model(spec: &str) -> HubModelRef {
    hub_ref(spec).unwrap()
}

fn download(s: HubSettings, spec: &str) -> Result<Snapshot, HubError> {
    Hub::new(s).unwrap().download(&model(spec), |_| ())
}

fn repo_dir(cache: &Path) -> PathBuf {
    cache.join("models--tiny--test-bert")
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn first_download_fills_the_standard_cache_layout_and_loads() {
    let (_t, hub, files) = hub_with_tiny_bert();
    let cache = tempfile::tempdir().unwrap();
    let snap = download(settings(&hub, cache.path()), "tiny/test-bert").unwrap();
    assert_eq!(snap.commit, MAIN_SHA);
    assert_eq!(
        snap.files,
        ["config.json", "vocab.txt", "model.safetensors"].map(String::from)
    );
    assert_eq!(snap.downloaded, snap.files);
    // Python's layout: refs/main → sha, snapshot entries are links into blobs/.
    let rd = repo_dir(cache.path());
    assert_eq!(
        std::fs::read_to_string(rd.join("refs/main")).unwrap(),
        MAIN_SHA
    );
    assert!(!rd.join("refs").join(MAIN_SHA).exists());
    for f in &snap.files {
        let p = snap.dir.join(f);
        let want = files.iter().find(|m| &m.name == f).unwrap();
        // Relative links, as Python makes them, so the cache can move.
        assert_eq!(
            std::fs::read_link(&p).unwrap(),
            PathBuf::from(format!("../../blobs/{}", want.etag())),
            "{f}: blobs are named by etag"
        );
        assert_eq!(std::fs::read(&p).unwrap(), want.bytes, "{f}");
        // Locks where Python's client takes them, not beside the blobs.
        assert!(
            cache
                .path()
                .join(".locks/models--tiny--test-bert")
                .join(format!("{}.lock", want.etag()))
                .is_file(),
            "{f}"
        );
    }
    let leftovers: Vec<String> = tree(&rd)
        .into_iter()
        .filter(|p| p.ends_with(".part") || p.ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(cache.path().join("CACHEDIR.TAG").is_file());
    // Small files come from the hub itself; the weights from the storage
    // origin, once, and after a HEAD on the hub as Python does it.
    assert_eq!(hub.content_gets(&weights(&files).sha256()), 1);
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.method == "HEAD" && r.path.ends_with("/model.safetensors")));
    // The snapshot is a model directory whose profile names the repo and commit.
    let embedder = Embedder::open(&snap.dir, Engine::auto()).unwrap();
    assert_eq!(embedder.profile.id, "tiny/test-bert");
    assert_eq!(embedder.profile.revision, MAIN_SHA);
    let (v, _) = embedder
        .embed(&["قال الوزير"], &RunOptions::default(), |_| {})
        .unwrap();
    assert_eq!(v[0].len(), crate::common::HIDDEN);
}

#[test]
fn cache_hit_needs_no_server_and_offline_mode_uses_only_the_cache() {
    let (_t, mut hub, _) = hub_with_tiny_bert();
    let cache = tempfile::tempdir().unwrap();
    let s = settings(&hub, cache.path());
    download(s.clone(), "tiny/test-bert").unwrap();
    let seen = hub.requests().len() + hub.storage_requests().len();
    // A second resolve is answered from the cache: no request at all.
    let again = Hub::new(s.clone())
        .unwrap()
        .resolve(&model("tiny/test-bert"), |_| ())
        .unwrap();
    assert!(again.downloaded.is_empty());
    assert_eq!(hub.requests().len() + hub.storage_requests().len(), seen);
    hub.stop();
    let snap = Hub::new(s.clone())
        .unwrap()
        .resolve(&model("tiny/test-bert"), |_| ())
        .unwrap();
    assert_eq!(snap.commit, MAIN_SHA);
    // An explicit download with the server gone says it cannot reach the hub.
    let err = download(s.clone(), "tiny/test-bert").unwrap_err();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("HF_HUB_OFFLINE=1"), "{err}");
    // Offline: the cache answers, and a model never fetched is named as missing.
    let offline = HubSettings { offline: true, ..s };
    let snap = download(offline.clone(), "tiny/test-bert").unwrap();
    assert_eq!(snap.commit, MAIN_SHA);
    let err = download(offline.clone(), "tiny/test-bert@v1").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::NotCached { .. }), "{msg}");
    assert!(
        msg.contains("HF_HUB_OFFLINE") && msg.contains("refs/v1"),
        "{msg}"
    );
    // A snapshot with its weights gone is incomplete, and says what is missing.
    std::fs::remove_file(snap.dir.join("model.safetensors")).unwrap();
    let err = cached_snapshot(&offline.cache_dir, &model("tiny/test-bert")).unwrap_err();
    assert!(err.to_string().contains("weights"), "{err}");
}

#[test]
fn revisions_are_pinned_by_tag_or_commit_and_share_blobs() {
    let (_t, hub, files) = hub_with_tiny_bert();
    let weights = weights(&files).clone();
    let cache = tempfile::tempdir().unwrap();
    let s = settings(&hub, cache.path());
    let v1 = download(s.clone(), "tiny/test-bert@v1").unwrap();
    assert_eq!(v1.commit, OLD_SHA);
    assert_eq!(hub.content_gets(&weights.sha256()), 1);
    let config = std::fs::read(v1.dir.join("config.json")).unwrap();
    let main_config = &files
        .iter()
        .find(|f| f.name == "config.json")
        .unwrap()
        .bytes;
    assert_ne!(&config, main_config, "v1 has its own config.json");
    assert!(config.ends_with(b"\n"));
    let rd = repo_dir(cache.path());
    assert_eq!(
        std::fs::read_to_string(rd.join("refs/v1")).unwrap(),
        OLD_SHA
    );
    assert!(!rd.join("refs/main").exists(), "main was never asked for");

    // The other commit by sha: the weights blob is already in the cache.
    let hub_before = hub.requests().len();
    let by_sha = download(s.clone(), &format!("tiny/test-bert@{MAIN_SHA}")).unwrap();
    assert_eq!(by_sha.commit, MAIN_SHA);
    assert_eq!(
        &std::fs::read(by_sha.dir.join("config.json")).unwrap(),
        main_config
    );
    assert_eq!(by_sha.downloaded, vec!["config.json".to_string()]);
    // Only metadata was asked for the weights: no new GET of their content.
    assert_eq!(hub.content_gets(&weights.sha256()), 1);
    let heads: Vec<String> = hub.requests()[hub_before..]
        .iter()
        .filter(|r| r.path.ends_with("/model.safetensors"))
        .map(|r| r.line())
        .collect();
    assert_eq!(
        heads,
        [format!(
            "HEAD /tiny/test-bert/resolve/{MAIN_SHA}/model.safetensors"
        )]
    );
    assert_eq!(
        std::fs::read_link(by_sha.dir.join("model.safetensors")).unwrap(),
        std::fs::read_link(v1.dir.join("model.safetensors")).unwrap()
    );
    // A commit pin writes no ref (Python's scan would list it as one).
    let mut refs = tree(&rd.join("refs"));
    refs.sort();
    assert_eq!(refs, ["v1"]);

    // main points at that commit, whose snapshot is complete: no request
    // but the listing.
    let (hub_before, storage_before) = (hub.requests().len(), hub.storage_requests().len());
    let main = download(s.clone(), "tiny/test-bert").unwrap();
    assert!(main.downloaded.is_empty());
    let asked: Vec<String> = hub.requests()[hub_before..]
        .iter()
        .map(|r| r.line())
        .collect();
    assert_eq!(
        asked,
        ["GET /api/models/tiny/test-bert/revision/main".to_string()]
    );
    assert_eq!(hub.storage_requests().len(), storage_before);
    assert_eq!(
        std::fs::read_to_string(rd.join("refs/main")).unwrap(),
        MAIN_SHA
    );
    let err = download(s, "tiny/test-bert@v9").unwrap_err();
    assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err}");
}

#[test]
fn unknown_private_gated_and_weightless_repos_say_what_to_do() {
    let (_t, hub, _) = hub_with_tiny_bert();
    let cache = tempfile::tempdir().unwrap();
    let s = settings(&hub, cache.path());
    let err = download(s.clone(), "tiny/no-such-model").unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, HubError::RepoNotFound { status: 401, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("HF_TOKEN") && msg.contains("no token was sent"),
        "{msg}"
    );
    let with_token = HubSettings {
        token: Some("hf_other".into()),
        ..s.clone()
    };
    let err = download(with_token, "tiny/no-such-model").unwrap_err();
    assert!(
        matches!(err, HubError::RepoNotFound { status: 404, .. }),
        "{err}"
    );
    // Private: invisible without the token, fine with it.
    let err = download(s.clone(), "tiny/private-bert").unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err}");
    let authorised = HubSettings {
        token: Some("hf_secret".into()),
        ..s.clone()
    };
    download(authorised.clone(), "tiny/private-bert").unwrap();
    // Gated: listed, but files need the token.
    let err = download(s.clone(), "tiny/gated-bert").unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, HubError::Unauthorized { status: 401, .. }),
        "{msg}"
    );
    assert!(msg.contains("gated") && msg.contains("--token"), "{msg}");
    download(authorised, "tiny/gated-bert").unwrap();
    let err = download(s, "tiny/no-weights").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::NoUsableFiles { .. }), "{msg}");
    assert!(
        msg.contains("model.safetensors or pytorch_model.bin"),
        "{msg}"
    );
}

#[test]
fn a_dropped_connection_resumes_and_never_leaves_a_half_file_in_place() {
    let (_t, hub, files) = hub_with_tiny_bert();
    let weights = weights(&files).clone();
    let lfs_path = format!("/lfs/{}", weights.sha256());
    let cache = tempfile::tempdir().unwrap();
    let s = settings(&hub, cache.path());
    // One drop: the client's retry resumes with a range request.
    hub.faults().drops.store(1, Ordering::SeqCst);
    let snap = download(s.clone(), "tiny/test-bert").unwrap();
    assert_eq!(
        std::fs::read(snap.dir.join("model.safetensors")).unwrap(),
        weights.bytes
    );
    let half = weights.bytes.len() / 2;
    let resumed = format!("bytes={half}-");
    assert!(
        hub.storage_requests()
            .iter()
            .any(|r| r.path == lfs_path && r.range() == Some(resumed.as_str())),
        "{:?}",
        hub.storage_requests()
    );

    // Every attempt dropped: an error, and nothing in the snapshot or blobs.
    let cache = tempfile::tempdir().unwrap();
    let s = settings(&hub, cache.path());
    hub.faults().drops.store(1000, Ordering::SeqCst);
    let gets_before = hub.content_gets(&weights.sha256());
    let err = download(s.clone(), "tiny/test-bert").unwrap_err();
    assert!(matches!(err, HubError::Interrupted { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("resumes"), "{msg}");
    // The message counts the requests that were made.
    let made = hub.content_gets(&weights.sha256()) - gets_before;
    assert!(made > 1, "{made}");
    assert!(
        msg.contains(&format!("{made} requests failed ({} retries", made - 1)),
        "{made} requests made; {msg}"
    );
    let rd = repo_dir(cache.path());
    let blob = rd.join("blobs").join(weights.sha256());
    assert!(
        !blob.exists(),
        "a partial blob must not take the final name"
    );
    let snapshot_weights = rd
        .join("snapshots")
        .join(MAIN_SHA)
        .join("model.safetensors");
    assert!(!snapshot_weights.exists());
    let part = blob.with_extension("part");
    let partial = std::fs::metadata(&part).unwrap().len() as usize;
    assert!(partial > 0 && partial < weights.bytes.len());
    // The network recovers: the next run resumes from the partial file.
    hub.faults().drops.store(0, Ordering::SeqCst);
    let before = hub.storage_requests().len();
    let snap = download(s, "tiny/test-bert").unwrap();
    assert_eq!(
        std::fs::read(snap.dir.join("model.safetensors")).unwrap(),
        weights.bytes
    );
    let resumed = format!("bytes={partial}-");
    assert!(
        hub.storage_requests()[before..]
            .iter()
            .any(|r| r.path == lfs_path && r.range() == Some(resumed.as_str())),
        "{:?}",
        &hub.storage_requests()[before..]
    );
    assert!(!part.exists());
}

#[test]
fn old_partial_files_are_resumed_and_hf_hub_locks_removed() {
    let (_t, hub, files) = hub_with_tiny_bert();
    let weights = weights(&files).clone();
    let lfs_path = format!("/lfs/{}", weights.sha256());
    // A `.part` file two days old (a crashed run) and the lock hf-hub left.
    let cache = tempfile::tempdir().unwrap();
    let blobs = repo_dir(cache.path()).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let part = blobs.join(format!("{}.part", weights.sha256()));
    let old_lock = blobs.join(format!("{}.lock", weights.sha256()));
    std::fs::write(&part, &weights.bytes[..100]).unwrap();
    std::fs::write(&old_lock, b"").unwrap();
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&part)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let snap = download(settings(&hub, cache.path()), "tiny/test-bert").unwrap();
    assert_eq!(
        std::fs::read(snap.dir.join("model.safetensors")).unwrap(),
        weights.bytes
    );
    let gets: Vec<Option<String>> = hub
        .storage_requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == lfs_path)
        .map(|r| r.range().map(str::to_string))
        .collect();
    assert_eq!(gets, [Some("bytes=100-".to_string())]);
    assert!(!part.exists() && !old_lock.exists());

    // A `.part` file longer than the file cannot be its start: it is removed.
    let cache = tempfile::tempdir().unwrap();
    let blobs = repo_dir(cache.path()).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let part = blobs.join(format!("{}.part", weights.sha256()));
    std::fs::write(&part, vec![0u8; weights.bytes.len() + 10]).unwrap();
    let before = hub.storage_requests().len();
    let snap = download(settings(&hub, cache.path()), "tiny/test-bert").unwrap();
    assert_eq!(
        std::fs::read(snap.dir.join("model.safetensors")).unwrap(),
        weights.bytes
    );
    let gets: Vec<Option<String>> = hub.storage_requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path == lfs_path)
        .map(|r| r.range().map(str::to_string))
        .collect();
    assert_eq!(gets, [None]);
    assert!(!part.exists());
}

#[test]
fn a_blob_another_process_is_writing_is_waited_for_then_reused() {
    let (_t, hub, files) = hub_with_tiny_bert();
    let weights = weights(&files).clone();
    let cache = tempfile::tempdir().unwrap();
    // The test plays the other process: it holds the blob's lock where
    // Python's client would take it.
    let lock_path = cache
        .path()
        .join(".locks/models--tiny--test-bert")
        .join(format!("{}.lock", weights.sha256()));
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.lock().unwrap();
    let s = settings(&hub, cache.path());
    let worker = std::thread::spawn(move || download(s, "tiny/test-bert"));
    // Wait until mawqif has asked for the weights' metadata, then a little.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !hub
        .requests()
        .iter()
        .any(|r| r.method == "HEAD" && r.path.ends_with("/model.safetensors"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no HEAD for the weights"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!worker.is_finished(), "mawqif did not wait for the lock");
    assert_eq!(hub.content_gets(&weights.sha256()), 0);
    // The other process finishes the blob and lets go.
    let blob = repo_dir(cache.path()).join("blobs").join(weights.sha256());
    std::fs::write(&blob, &weights.bytes).unwrap();
    drop(lock);
    let snap = worker.join().unwrap().unwrap();
    assert!(!snap.downloaded.contains(&"model.safetensors".to_string()));
    assert_eq!(hub.content_gets(&weights.sha256()), 0);
    assert_eq!(
        std::fs::read(snap.dir.join("model.safetensors")).unwrap(),
        weights.bytes
    );
}

#[test]
fn the_token_goes_to_the_hub_and_never_to_the_storage_host() {
    let (_t, hub, files) = hub_with_tiny_bert();
    let weights = weights(&files).clone();
    for repo in ["tiny/private-bert", "tiny/gated-bert", "tiny/test-bert"] {
        let cache = tempfile::tempdir().unwrap();
        let s = HubSettings {
            token: Some("hf_secret".into()),
            ..settings(&hub, cache.path())
        };
        let hub_before = hub.requests().len();
        let gets_before = hub.content_gets(&weights.sha256());
        download(s, repo).unwrap();
        assert_eq!(
            hub.content_gets(&weights.sha256()),
            gets_before + 1,
            "{repo}"
        );
        for r in &hub.requests()[hub_before..] {
            assert_eq!(r.authorization(), Some("Bearer hf_secret"), "{}", r.line());
        }
    }
    assert_no_token_reached_storage(&hub);
}

#[test]
fn requests_go_through_the_proxy_except_to_loopback() {
    let (_t, hub, _) = hub_with_tiny_bert();
    // A hub at a name only the proxy (the mock itself) can reach.
    let cache = tempfile::tempdir().unwrap();
    let s = HubSettings {
        endpoint: "http://hub.mawqif.invalid".into(),
        proxy: ProxySettings {
            http: Some(hub.url.clone()),
            https: Some(hub.url.clone()),
            no_proxy: vec![],
        },
        ..settings(&hub, cache.path())
    };
    let snap = download(s, "tiny/test-bert").unwrap();
    assert_eq!(snap.commit, MAIN_SHA);
    let hub_seen = hub.requests();
    assert!(!hub_seen.is_empty());
    for r in &hub_seen {
        assert_eq!(
            r.proxied_for.as_deref(),
            Some("hub.mawqif.invalid"),
            "{}",
            r.line()
        );
    }
    // The storage host is on 127.0.0.1: reached directly.
    let storage_seen = hub.storage_requests();
    assert!(!storage_seen.is_empty());
    assert!(storage_seen.iter().all(|r| r.proxied_for.is_none()));
}

#[test]
fn a_corrupted_file_is_rejected_and_removed() {
    let (_t, hub, files) = hub_with_tiny_bert();
    let weights = files.iter().find(|f| f.lfs).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let s = settings(&hub, cache.path());
    hub.faults().corrupt_lfs.store(true, Ordering::SeqCst);
    let err = download(s.clone(), "tiny/test-bert").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("sha256") && msg.contains(&weights.sha256()),
        "{msg}"
    );
    let rd = repo_dir(cache.path());
    assert!(!rd.join("blobs").join(weights.sha256()).exists());
    assert!(!rd
        .join("snapshots")
        .join(MAIN_SHA)
        .join("model.safetensors")
        .exists());
    hub.faults().corrupt_lfs.store(false, Ordering::SeqCst);
    let snap = download(s, "tiny/test-bert").unwrap();
    assert_eq!(snap.downloaded, vec!["model.safetensors".to_string()]);
}

/// `mawqif` with a private HF_HOME, the mock hub as HF_ENDPOINT, and no
/// auto-trained heads.
pub fn mawqif_with_hub(
    hub_url: &str,
    home: &Path,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mawqif"));
    cmd.args(args)
        .env("HF_HOME", home.join("hf"))
        .env("HF_ENDPOINT", hub_url)
        .env("MAWQIF_CACHE", home.join("mawqif"))
        .env("MAWQIF_TRAIN_DATA", "");
    for var in [
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "HF_HUB_CACHE",
        "HF_TOKEN_PATH",
    ]
    .into_iter()
    .chain(PROXY_VARS)
    {
        cmd.env_remove(var);
    }
    cmd.envs(extra_env.iter().copied());
    cmd.output().expect("run mawqif")
}

#[test]
fn cli_download_then_classify_online_then_offline_with_the_server_stopped() {
    let (tmp, mut hub, _) = hub_with_tiny_bert();
    let home = tempfile::tempdir().unwrap();
    let text = home.path().join("news.txt");
    std::fs::write(
        &text,
        "قال الوزير إن الحكومة ستدعم المشروع. وأكد المجلس أن القرار صائب. وهذا رأي الكاتب.\n",
    )
    .unwrap();
    let head = tmp.path().join("tiny").join("head");
    let url = hub.url.clone();
    let run = |args: &[&str], env: &[(&str, &str)]| mawqif_with_hub(&url, home.path(), args, env);

    let o = run(&["download", "tiny/test-bert"], &[]);
    assert!(o.status.success(), "{}", crate::common::stderr(&o));
    let snapshot = PathBuf::from(crate::common::stdout(&o).trim());
    assert!(snapshot.join("model.safetensors").is_file());
    assert!(snapshot.starts_with(home.path().join("hf/hub/models--tiny--test-bert/snapshots")));
    assert!(crate::common::stderr(&o).contains("downloaded, verified"));

    let classify = [
        "classify",
        "--format",
        "jsonl",
        "--model",
        "tiny/test-bert",
        "--head",
        head.to_str().unwrap(),
        text.to_str().unwrap(),
    ];
    let online = run(&classify, &[]);
    assert!(
        online.status.success(),
        "{}",
        crate::common::stderr(&online)
    );
    assert_eq!(crate::common::stdout(&online).lines().count(), 3);

    let o = run(&["download", "tiny/no-such-model"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        crate::common::stderr(&o).contains("was not found"),
        "{}",
        crate::common::stderr(&o)
    );

    hub.stop();
    for env in [vec![], vec![("HF_HUB_OFFLINE", "1")]] {
        let again = run(&classify, &env);
        assert!(
            again.status.success(),
            "{env:?}: {}",
            crate::common::stderr(&again)
        );
        assert_eq!(
            crate::common::stdout(&again),
            crate::common::stdout(&online),
            "{env:?}"
        );
    }
    let o = run(&["download", "tiny/test-bert"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        crate::common::stderr(&o).contains("cannot reach the hub"),
        "{}",
        crate::common::stderr(&o)
    );
    let o = run(&["download", "tiny/test-bert"], &[("HF_HUB_OFFLINE", "1")]);
    assert!(o.status.success(), "{}", crate::common::stderr(&o));
    assert!(crate::common::stderr(&o).contains("already in the cache"));
    let mut v1 = classify;
    v1[4] = "tiny/test-bert@v1";
    let o = run(&v1, &[("HF_HUB_OFFLINE", "1")]);
    assert_eq!(o.status.code(), Some(1));
    let err = crate::common::stderr(&o);
    assert!(
        err.contains("HF_HUB_OFFLINE") && err.contains("mawqif download"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn cli_models_lists_the_registry_and_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let o = mawqif_with_hub("http://127.0.0.1:9", home.path(), &["models"], &[]);
    assert!(o.status.success(), "{}", crate::common::stderr(&o));
    let out = crate::common::stdout(&o);
    for id in [
        "aubmindlab/bert-base-arabertv02 (default)",
        "CAMeL-Lab/bert-base-arabic-camelbert-msa",
        "UBC-NLP/ARBERT",
        "intfloat/multilingual-e5-small",
    ] {
        assert!(out.contains(id), "{id} missing in\n{out}");
    }
    assert!(
        out.contains("arabert-v02") && out.contains("\"query: \""),
        "{out}"
    );
    assert!(out.contains(&home.path().join("hf/hub").display().to_string()));
}

#[test]
fn without_the_local_model_the_default_hub_model_is_used() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let files = MockRepo::files_from_dir(&dir);
    let hub = MockHub::start(vec![MockRepo {
        id: "aubmindlab/bert-base-arabertv02".into(),
        commits: BTreeMap::from([(MAIN_SHA.to_string(), files)]),
        refs: BTreeMap::from([("main".to_string(), MAIN_SHA.to_string())]),
        ..Default::default()
    }]);
    let home = tempfile::tempdir().unwrap();
    let text = home.path().join("news.txt");
    std::fs::write(&text, "قال الوزير إن الحكومة ستدعم المشروع.\n").unwrap();
    let head = tmp.path().join("tiny").join("head");
    // Run where there is no models/ directory, so the default path is absent.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mawqif"));
    cmd.current_dir(home.path())
        .args(["classify", "--format", "jsonl", "--head"])
        .arg(&head)
        .arg(&text)
        .env("HF_HOME", home.path().join("hf"))
        .env("HF_ENDPOINT", &hub.url)
        .env("MAWQIF_TRAIN_DATA", "")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN");
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    let o = cmd.output().unwrap();
    let err = crate::common::stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("using the default hub model aubmindlab/bert-base-arabertv02"),
        "{err}"
    );
    assert!(home
        .path()
        .join("hf/hub/models--aubmindlab--bert-base-arabertv02/refs/main")
        .is_file());
    assert_eq!(crate::common::stdout(&o).lines().count(), 1);
}

#[test]
fn cli_tokens_from_flag_env_and_file_stay_on_the_hub() {
    let (_t, hub, files) = hub_with_tiny_bert();
    let weights = weights(&files).clone();
    for how in ["--token", "HF_TOKEN", "token file"] {
        let home = tempfile::tempdir().unwrap();
        let mut args = vec!["download", "tiny/private-bert"];
        let mut env = vec![];
        match how {
            "--token" => args.extend(["--token", "hf_secret"]),
            "HF_TOKEN" => env.push(("HF_TOKEN", "hf_secret")),
            _ => {
                // Where `huggingface-cli login` writes it: $HF_HOME/token.
                std::fs::create_dir_all(home.path().join("hf")).unwrap();
                std::fs::write(home.path().join("hf/token"), "hf_secret\n").unwrap();
            }
        }
        let (hub_before, storage_before) = (hub.requests().len(), hub.storage_requests().len());
        let o = mawqif_with_hub(&hub.url, home.path(), &args, &env);
        // The repo is private: success means the token reached the hub.
        assert!(o.status.success(), "{how}: {}", crate::common::stderr(&o));
        for r in &hub.requests()[hub_before..] {
            assert_eq!(
                r.authorization(),
                Some("Bearer hf_secret"),
                "{how}: {}",
                r.line()
            );
        }
        let storage: Vec<_> = hub.storage_requests()[storage_before..].to_vec();
        assert!(
            storage
                .iter()
                .any(|r| r.method == "GET" && r.path.ends_with(&weights.sha256())),
            "{how}: the weights came from the storage host"
        );
        for r in &storage {
            assert_eq!(r.authorization(), None, "{how}: {}", r.line());
        }
    }
    assert_no_token_reached_storage(&hub);
}

#[test]
fn cli_download_works_with_bogus_proxies_set_for_loopback_hubs() {
    let (_t, hub, _) = hub_with_tiny_bert();
    let home = tempfile::tempdir().unwrap();
    // A proxy that answers nothing (port 9 is closed).
    let bogus = "http://127.0.0.1:9";
    let env: Vec<(&str, &str)> = PROXY_VARS
        .iter()
        .filter(|v| !v.eq_ignore_ascii_case("no_proxy"))
        .map(|v| (*v, bogus))
        .collect();
    let o = mawqif_with_hub(&hub.url, home.path(), &["download", "tiny/test-bert"], &env);
    assert!(o.status.success(), "{}", crate::common::stderr(&o));
    // The same proxy for a hub that is not on loopback is used, and fails.
    let o = mawqif_with_hub(
        "http://hub.mawqif.invalid",
        home.path(),
        &["download", "tiny/test-bert@v1"],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = crate::common::stderr(&o);
    assert!(
        err.contains("through the proxy http://127.0.0.1:9") && err.contains("HTTPS_PROXY"),
        "{err}"
    );
}
