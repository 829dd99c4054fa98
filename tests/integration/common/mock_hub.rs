//! An in-process stand-in for the Hugging Face hub on 127.0.0.1, with the
//! endpoints, headers and redirects that the real hub uses for downloads,
//! enough for mawqif and for Python's `huggingface_hub` (2.4):
//!
//! - `GET /api/models/{repo}/revision/{rev}[?blobs=true]`: the listing (commit
//!   sha, siblings with `blobId`, `size`, `lfs.sha256`).
//! - `GET /api/models/{repo}/tree/{rev}`: the file tree, as
//!   `snapshot_download` asks for it.
//! - `GET|HEAD /{repo}/resolve/{rev}/{file}`: plain files answer 200/206
//!   with `ETag` (git blob sha1), `X-Repo-Commit`, `Content-Range` on range
//!   requests; LFS files answer 302 to a signed URL on a **second origin**
//!   (another port: the storage host), with `X-Linked-Etag` (sha256),
//!   `X-Linked-Size` and `X-Repo-Commit`.
//! - The storage host serves `GET|HEAD /lfs/{sha256}?X-Amz-Signature=…` with
//!   range requests. Like a signed-URL store it refuses (400) a request
//!   that carries an `Authorization` header, and it logs every request's
//!   headers so tests can prove that none ever does.
//! - Errors as the hub gives them: 401 `RepoNotFound` without a token
//!   (private or unknown repo), 404 `RepoNotFound` with one, 404
//!   `RevisionNotFound`, 404 `EntryNotFound`, 401/403 `GatedRepo`.
//! - Requests in proxy form (`GET http://host/path`) are served as if this
//!   were the proxy, and logged as proxied.
//!
//! Faults for tests: drop the connection part-way through storage bodies,
//! serve LFS bodies with a flipped byte, or serve them slowly.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha1::Digest;

#[derive(Clone)]
pub struct MockFile {
    pub name: String,
    pub bytes: Vec<u8>,
    pub lfs: bool,
}

impl MockFile {
    pub fn blob_id(&self) -> String {
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", self.bytes.len()).as_bytes());
        h.update(&self.bytes);
        hex(&h.finalize())
    }

    pub fn sha256(&self) -> String {
        hex(&sha2::Sha256::digest(&self.bytes))
    }

    /// The name of its blob in the cache: the etag the hub gives.
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.blob_id()
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Default)]
pub struct MockRepo {
    pub id: String,
    /// commit sha → files at that commit
    pub commits: BTreeMap<String, Vec<MockFile>>,
    /// branch or tag → commit sha
    pub refs: BTreeMap<String, String>,
    /// Only this bearer token sees the repo at all (private repo).
    pub private_token: Option<String>,
    /// Listing is public, files need this token (gated repo).
    pub gated_token: Option<String>,
}

impl MockRepo {
    /// Files of a model directory on disk; `*.safetensors` and `*.bin` go through LFS.
    pub fn files_from_dir(dir: &Path) -> Vec<MockFile> {
        let mut files: Vec<MockFile> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| {
                let name = e.file_name().into_string().unwrap();
                let lfs = name.ends_with(".safetensors") || name.ends_with(".bin");
                MockFile {
                    bytes: std::fs::read(e.path()).unwrap(),
                    name,
                    lfs,
                }
            })
            .collect();
        files.push(MockFile {
            name: "README.md".into(),
            bytes: b"# tiny test BERT\n".to_vec(),
            lfs: false,
        });
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files
    }
}

#[derive(Default)]
pub struct Faults {
    /// Storage responses still to cut off part-way (each drop uses one).
    pub drops: AtomicUsize,
    /// Serve LFS bodies with their first byte flipped.
    pub corrupt_lfs: AtomicBool,
    /// Serve storage bodies in 8 pieces, this many milliseconds apart.
    pub slow_lfs_ms: AtomicU64,
}

/// One request as a server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Decoded path, without the query.
    pub path: String,
    pub query: String,
    /// Lowercase names.
    pub headers: BTreeMap<String, String>,
    /// Sent in proxy form (`GET http://host/path`), for this host.
    pub proxied_for: Option<String>,
}

impl Seen {
    pub fn range(&self) -> Option<&str> {
        self.headers.get("range").map(String::as_str)
    }

    pub fn authorization(&self) -> Option<&str> {
        self.headers.get("authorization").map(String::as_str)
    }

    /// `METHOD /path [range=…]`, for messages.
    pub fn line(&self) -> String {
        format!(
            "{} {}{}{}",
            self.method,
            self.path,
            self.range()
                .map(|r| format!(" range={r}"))
                .unwrap_or_default(),
            self.authorization()
                .map(|_| " +authorization")
                .unwrap_or_default()
        )
    }
}

struct State {
    repos: Vec<MockRepo>,
    storage_base: String,
    faults: Faults,
    hub_log: Mutex<Vec<Seen>>,
    storage_log: Mutex<Vec<Seen>>,
}

/// A listening socket served by a thread until stopped.
struct Server {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn serve(listener: TcpListener, state: Arc<State>, storage: bool) -> Self {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || {
                        let _ = handle(stream, &state, storage);
                    });
                }
            })
        };
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
            let _ = t.join();
        }
    }
}

pub struct MockHub {
    /// The hub's origin (`HF_ENDPOINT`).
    pub url: String,
    /// The storage host's origin: another port, so another origin.
    pub storage_url: String,
    state: Arc<State>,
    hub: Server,
    storage: Server,
}

impl MockHub {
    pub fn start(repos: Vec<MockRepo>) -> Self {
        let hub_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let storage_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let storage_url = format!("http://{}", storage_listener.local_addr().unwrap());
        let state = Arc::new(State {
            repos,
            storage_base: storage_url.clone(),
            faults: Faults::default(),
            hub_log: Mutex::new(Vec::new()),
            storage_log: Mutex::new(Vec::new()),
        });
        let hub = Server::serve(hub_listener, state.clone(), false);
        let storage = Server::serve(storage_listener, state.clone(), true);
        Self {
            url: format!("http://{}", hub.addr),
            storage_url,
            state,
            hub,
            storage,
        }
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Requests the hub's origin has seen so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.hub_log.lock().unwrap().clone()
    }

    /// Requests the storage origin has seen so far.
    pub fn storage_requests(&self) -> Vec<Seen> {
        self.state.storage_log.lock().unwrap().clone()
    }

    /// Content requests (GET) for one LFS blob on the storage host.
    pub fn content_gets(&self, sha256: &str) -> usize {
        let path = format!("/lfs/{sha256}");
        self.storage_requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == path)
            .count()
    }

    /// Close both listening sockets: later connections are refused.
    pub fn stop(&mut self) {
        self.hub.stop();
        self.storage.stop();
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: BTreeMap<String, String>,
    proxied_for: Option<String>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let mut target = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    // Proxy form: `GET http://host:port/path HTTP/1.1`.
    let mut proxied_for = None;
    if let Some(rest) = target.strip_prefix("http://") {
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        proxied_for = Some(host.to_string());
        target = if path.is_empty() {
            "/".into()
        } else {
            path.into()
        };
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Some(Request {
        method,
        path: percent_decode(&path),
        query,
        headers,
        proxied_for,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then drop the connection.
    cut_after: Option<usize>,
    /// Send the body in pieces this far apart.
    slow_ms: u64,
}

impl Response {
    fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut_after: None,
            slow_ms: 0,
        }
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }

    fn json(status: u16, value: serde_json::Value) -> Self {
        let mut r = Response::new(status).header("Content-Type", "application/json");
        r.body = value.to_string().into_bytes();
        r
    }

    fn error(status: u16, code: &str, message: &str) -> Self {
        let mut r = Response::new(status)
            .header("X-Error-Code", code)
            .header("X-Error-Message", message)
            .header("Content-Type", "application/json");
        r.body = format!("{{\"error\":\"{message}\"}}").into_bytes();
        r
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    }
}

fn handle(mut stream: TcpStream, state: &State, storage: bool) -> std::io::Result<()> {
    let Some(req) = read_request(&stream) else {
        return Ok(());
    };
    let seen = Seen {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        proxied_for: req.proxied_for.clone(),
    };
    let log = if storage {
        &state.storage_log
    } else {
        &state.hub_log
    };
    log.lock().unwrap().push(seen);
    let resp = if storage {
        route_storage(&req, state)
    } else {
        route(&req, state)
    };
    let head_only = req.method == "HEAD";
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    if !head_only {
        let n = resp
            .cut_after
            .unwrap_or(resp.body.len())
            .min(resp.body.len());
        if resp.slow_ms > 0 {
            for piece in resp.body[..n].chunks(n.div_ceil(8).max(1)) {
                stream.write_all(piece)?;
                stream.flush()?;
                std::thread::sleep(std::time::Duration::from_millis(resp.slow_ms));
            }
        } else {
            stream.write_all(&resp.body[..n])?;
        }
    }
    stream.flush()?;
    if resp.cut_after.is_some() && !head_only {
        // Drop the connection without sending the rest.
        let _ = stream.shutdown(Shutdown::Both);
        return Ok(());
    }
    // Drain anything left so the client sees a clean close.
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 64];
    let _ = stream.read(&mut sink);
    Ok(())
}

fn bearer(req: &Request) -> Option<String> {
    req.headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

/// The repo and commit a request names, or the hub's error for it.
fn find<'a>(
    state: &'a State,
    req: &Request,
    repo_id: &str,
    rev: &str,
) -> Result<(&'a MockRepo, String), Response> {
    let token = bearer(req);
    let not_found = || {
        // Like the hub: without a token a missing repo is a 401, with one a 404.
        let status = if token.is_some() { 404 } else { 401 };
        Response::error(status, "RepoNotFound", "Repository not found")
    };
    let repo = state
        .repos
        .iter()
        .find(|r| r.id == repo_id)
        .ok_or_else(not_found)?;
    if let Some(t) = &repo.private_token {
        if token.as_ref() != Some(t) {
            return Err(not_found());
        }
    }
    let commit = if repo.commits.contains_key(rev) {
        rev.to_string()
    } else {
        repo.refs
            .get(rev)
            .cloned()
            .ok_or_else(|| Response::error(404, "RevisionNotFound", "Invalid rev id"))?
    };
    Ok((repo, commit))
}

fn route(req: &Request, state: &State) -> Response {
    let path = req.path.trim_start_matches('/');
    if let Some(rest) = path.strip_prefix("api/models/") {
        // {org}/{name}/{revision|tree}/{rev...}
        let mut it = rest.splitn(4, '/');
        let (Some(org), Some(name), Some(kind), Some(rev)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Response::error(404, "", "not found");
        };
        let repo_id = format!("{org}/{name}");
        let (repo, commit) = match find(state, req, &repo_id, rev) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let files = &repo.commits[&commit];
        return match kind {
            "revision" => {
                let blobs = req.query.contains("blobs=true");
                let siblings: Vec<serde_json::Value> = files
                    .iter()
                    .map(|f| {
                        let mut s = serde_json::json!({ "rfilename": f.name });
                        if blobs {
                            s["blobId"] = f.blob_id().into();
                            s["size"] = f.bytes.len().into();
                            if f.lfs {
                                s["lfs"] = serde_json::json!({
                                    "sha256": f.sha256(), "size": f.bytes.len(), "pointerSize": 134
                                });
                            }
                        }
                        s
                    })
                    .collect();
                Response::json(
                    200,
                    serde_json::json!({
                        "_id": "0", "id": repo_id, "modelId": repo_id, "sha": commit,
                        "private": repo.private_token.is_some(),
                        "gated": if repo.gated_token.is_some() { "auto".into() } else { serde_json::Value::Bool(false) },
                        "siblings": siblings,
                    }),
                )
            }
            "tree" => {
                let entries: Vec<serde_json::Value> = files
                    .iter()
                    .map(|f| {
                        let mut e = serde_json::json!({
                            "type": "file", "oid": f.blob_id(), "size": f.bytes.len(), "path": f.name,
                        });
                        if f.lfs {
                            e["lfs"] = serde_json::json!({
                                "oid": f.sha256(), "size": f.bytes.len(), "pointerSize": 134
                            });
                        }
                        e
                    })
                    .collect();
                Response::json(200, serde_json::Value::Array(entries))
            }
            _ => Response::error(404, "", "not found"),
        };
    }
    // {org}/{name}/resolve/{rev}/{file}; rev may hold `/` only percent-encoded,
    // which read_request has decoded: try each split.
    let parts: Vec<&str> = path.splitn(4, '/').collect();
    if parts.len() == 4 && parts[2] == "resolve" {
        let repo_id = format!("{}/{}", parts[0], parts[1]);
        let rest = parts[3];
        let mut result = None;
        for (i, _) in rest.match_indices('/') {
            let (rev, file) = (&rest[..i], &rest[i + 1..]);
            match find(state, req, &repo_id, rev) {
                Ok((repo, commit)) => {
                    result = Some(resolve(req, state, repo, &commit, file));
                    break;
                }
                Err(r) if r.status == 404 && result.is_none() => result = Some(r),
                Err(r) if r.status != 404 => return r,
                Err(_) => {}
            }
        }
        return result.unwrap_or_else(|| Response::error(404, "", "not found"));
    }
    Response::error(404, "", "not found")
}

fn resolve(req: &Request, state: &State, repo: &MockRepo, commit: &str, name: &str) -> Response {
    if let Some(t) = &repo.gated_token {
        if bearer(req).as_ref() != Some(t) {
            let status = if bearer(req).is_some() { 403 } else { 401 };
            return Response::error(
                status,
                "GatedRepo",
                "Access to this model is restricted: you must be authenticated and accept its conditions",
            );
        }
    }
    let Some(file) = repo.commits[commit].iter().find(|f| f.name == name) else {
        return Response::error(404, "EntryNotFound", "Entry not found")
            .header("X-Repo-Commit", commit);
    };
    if file.lfs {
        let sha = file.sha256();
        return Response::new(302)
            .header(
                "Location",
                format!(
                    "{}/lfs/{sha}?X-Amz-Expires=3600&X-Amz-Signature=mock-{}",
                    state.storage_base,
                    &commit[..8]
                ),
            )
            .header("X-Linked-Etag", format!("\"{sha}\""))
            .header("X-Linked-Size", file.bytes.len().to_string())
            .header("X-Repo-Commit", commit)
            .header("ETag", format!("\"{}\"", file.blob_id()));
    }
    ranged(req, file.bytes.clone())
        .header("ETag", format!("\"{}\"", file.blob_id()))
        .header("X-Repo-Commit", commit)
}

/// The storage host: signed URLs, no Authorization accepted.
fn route_storage(req: &Request, state: &State) -> Response {
    if req.headers.contains_key("authorization") {
        // What S3 answers to a signed URL that also carries a token.
        return Response::error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter should be specified",
        );
    }
    let Some(sha) = req.path.strip_prefix("/lfs/") else {
        return Response::error(404, "", "no such object");
    };
    if !req.query.contains("X-Amz-Signature=") {
        return Response::error(403, "AccessDenied", "unsigned request");
    }
    let file = state
        .repos
        .iter()
        .flat_map(|r| r.commits.values().flatten())
        .find(|f| f.lfs && f.sha256() == sha);
    let Some(file) = file else {
        return Response::error(404, "", "no such object");
    };
    let mut bytes = file.bytes.clone();
    if state.faults.corrupt_lfs.load(Ordering::SeqCst) && !bytes.is_empty() {
        bytes[0] ^= 0xff;
    }
    let mut r = ranged(req, bytes).header("ETag", format!("\"{sha}\""));
    r.slow_ms = state.faults.slow_lfs_ms.load(Ordering::SeqCst);
    // Only content transfers are cut, not HEAD requests.
    let drop = req.method == "GET"
        && r.body.len() > 1
        && state
            .faults
            .drops
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
            .is_ok();
    if drop {
        r.cut_after = Some(r.body.len() / 2);
    }
    r
}

/// 200 with the whole body, or 206 with the asked range.
fn ranged(req: &Request, bytes: Vec<u8>) -> Response {
    let total = bytes.len();
    let range = req
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(s, e)| {
            let start: usize = s.parse().ok()?;
            let end: usize = if e.is_empty() {
                total.checked_sub(1)?
            } else {
                e.parse::<usize>().ok()?.min(total.checked_sub(1)?)
            };
            Some((start, end))
        });
    match range {
        Some((start, end)) if start <= end && end < total => {
            let mut r = Response::new(206)
                .header("Content-Range", format!("bytes {start}-{end}/{total}"))
                .header("Accept-Ranges", "bytes");
            r.body = bytes[start..=end].to_vec();
            r
        }
        Some(_) if req.headers.contains_key("range") => {
            Response::new(416).header("Content-Range", format!("bytes */{total}"))
        }
        _ => {
            let mut r = Response::new(200).header("Accept-Ranges", "bytes");
            r.body = bytes;
            r
        }
    }
}
