//! `mawqif classify` over archives: bad inputs among good ones, JSONL
//! records, shards that partition a corpus, and resuming a killed run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{article, mawqif, stderr, stdout};

fn units(o: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON unit per line"))
        .collect()
}

/// `n` short texts cut from the article, two paragraphs each.
fn texts(n: usize) -> Vec<String> {
    let paragraphs: Vec<String> = article()
        .split('\n')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    (0..n)
        .map(|i| {
            let a = &paragraphs[i % paragraphs.len()];
            let b = &paragraphs[(i * 7 + 3) % paragraphs.len()];
            format!("{a}\n{b}\n")
        })
        .collect()
}

/// A JSONL corpus of `n` records with ids `doc-0`… and an `outlet` field.
fn write_records(path: &Path, n: usize) {
    let mut body = String::new();
    for (i, text) in texts(n).iter().enumerate() {
        let record = serde_json::json!({"id": format!("doc-{i}"), "outlet": format!("o{}", i % 3), "text": text});
        body.push_str(&record.to_string());
        body.push('\n');
    }
    std::fs::write(path, body).unwrap();
}

#[test]
fn bad_files_among_a_hundred_good_ones_are_reported_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, text) in texts(100).iter().enumerate() {
        let p = tmp.path().join(format!("good{i:03}.txt"));
        std::fs::write(&p, text).unwrap();
        files.push(p.display().to_string());
    }
    let bad: [(&str, &[u8], &str); 3] = [
        ("empty.txt", b"", "is empty"),
        ("binary.txt", &[0x7f, b'E', b'L', b'F', 0, 0, 1], "binary"),
        ("latin1.txt", &[0xd8, 0xa7, 0xff, 0x20], "not valid UTF-8"),
    ];
    for (k, (name, bytes, _)) in bad.iter().enumerate() {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        files.insert(20 + 30 * k, p.display().to_string());
    }
    let mut args = vec!["classify", "--model", "cues", "--format", "jsonl"];
    args.extend(files.iter().map(String::as_str));
    let o = mawqif(&args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "bad inputs make the exit 1: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    for (name, _, reason) in &bad {
        let line = err
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} is not reported: {err}"));
        assert!(line.contains(reason), "{name}: {line}");
    }
    assert!(
        err.contains("100 texts") && err.contains("3 inputs failed"),
        "summary line: {err}"
    );
    // Every good file is classified, in the order given.
    let seen: Vec<String> = units(&o)
        .iter()
        .map(|u| u["file"].as_str().unwrap().to_string())
        .collect();
    let mut order: Vec<&String> = Vec::new();
    for f in &seen {
        if order.last() != Some(&f) {
            order.push(f);
        }
    }
    let good: Vec<&String> = files.iter().filter(|f| f.contains("good")).collect();
    assert_eq!(order, good);

    // --fail-fast stops at the first bad file: nothing after it is written.
    let mut args = vec![
        "classify",
        "--model",
        "cues",
        "--format",
        "jsonl",
        "--fail-fast",
    ];
    args.extend(files.iter().map(String::as_str));
    let o = mawqif(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("empty.txt"));
    let last = units(&o).last().unwrap()["file"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(last, files[19], "stopped at the first bad file");
}

#[test]
fn jsonl_records_carry_their_ids_and_kept_fields_and_bad_records_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus.jsonl");
    write_records(&corpus, 5);
    let mut body = std::fs::read_to_string(&corpus).unwrap();
    body.push_str("{\"id\": \"broken\", \"text\": \n");
    body.push_str("{\"id\": \"no-text\"}\n");
    body.push_str(
        "{\"id\": \"last\", \"outlet\": \"o9\", \"text\": \"قال الوزير إن الاجتماع انتهى.\"}\n",
    );
    std::fs::write(&corpus, body).unwrap();
    let o = mawqif(&[
        "classify",
        "--model",
        "cues",
        "--input",
        "jsonl",
        "--keep-fields",
        "outlet",
        corpus.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("corpus.jsonl:6:") && err.contains("corpus.jsonl:7:"),
        "{err}"
    );
    let units = units(&o);
    let ids: BTreeSet<&str> = units.iter().map(|u| u["id"].as_str().unwrap()).collect();
    let expected: BTreeSet<&str> = ["doc-0", "doc-1", "doc-2", "doc-3", "doc-4", "last"].into();
    assert_eq!(ids, expected);
    for u in &units {
        let id = u["id"].as_str().unwrap();
        let outlet = u["fields"]["outlet"].as_str().unwrap();
        if id == "last" {
            assert_eq!(outlet, "o9");
        } else {
            let i: usize = id.trim_start_matches("doc-").parse().unwrap();
            assert_eq!(outlet, format!("o{}", i % 3));
        }
    }
}

#[test]
fn shards_split_a_corpus_into_disjoint_parts_that_make_up_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus.jsonl");
    write_records(&corpus, 60);
    let run = |extra: &[&str]| {
        let mut args = vec![
            "classify",
            "--model",
            "cues",
            "--input",
            "jsonl",
            corpus.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = mawqif(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let whole = run(&[]);
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    let mut joined: Vec<String> = Vec::new();
    for k in 0..3 {
        let part = run(&["--shard", &format!("{k}/3")]);
        assert!(!part.is_empty(), "shard {k} of 3 is empty for 60 records");
        for line in part.lines() {
            let unit: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = unit["id"].as_str().unwrap().to_string();
            assert_eq!(
                *owner.entry(id.clone()).or_insert(k),
                k,
                "{id} in two shards"
            );
            joined.push(line.to_string());
        }
    }
    assert_eq!(owner.len(), 60);
    let mut whole: Vec<String> = whole.lines().map(String::from).collect();
    whole.sort();
    joined.sort();
    assert_eq!(joined, whole);
    // The same shard twice is the same records.
    assert_eq!(run(&["--shard", "1/3"]), run(&["--shard", "1/3"]));
    let o = mawqif(&["classify", "--model", "cues", "--shard", "3/3", "x.txt"]);
    assert!(!o.status.success() && stderr(&o).contains("--shard"));
}

/// One uninterrupted `classify --resume OUT` run over `corpus`, which must succeed.
fn resume_to(corpus: &Path, out: &Path) {
    let o = mawqif(&[
        "classify",
        "--model",
        "cues",
        "--input",
        "jsonl",
        corpus.to_str().unwrap(),
        "--resume",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_resumed_run_after_kills_writes_what_an_uninterrupted_run_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus.jsonl");
    write_records(&corpus, 3000);
    let full = tmp.path().join("full.jsonl");
    resume_to(&corpus, &full);
    let expected = std::fs::read(&full).unwrap();

    let out = tmp.path().join("out.jsonl");
    let progress = tmp.path().join("out.jsonl.progress");
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_mawqif"))
            .args(["classify", "--model", "cues", "--input", "jsonl"])
            .arg(&corpus)
            .arg("--resume")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Kill runs part-way: after some documents are committed, before all are.
    let mut cut_short = 0;
    for round in 0..40 {
        let before = std::fs::read_to_string(&progress)
            .map(|p| p.lines().count())
            .unwrap_or(0);
        let mut child = start();
        std::thread::sleep(std::time::Duration::from_millis(5 + (round * 7) % 40));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        let after = std::fs::read_to_string(&progress)
            .map(|p| p.lines().count())
            .unwrap_or(0);
        if !finished && after > before && after < 3000 {
            cut_short += 1;
        }
        if cut_short >= 3 {
            break;
        }
    }
    assert!(
        cut_short >= 1,
        "no run was killed part-way; the test proves nothing"
    );
    resume_to(&corpus, &out);
    assert!(
        std::fs::read(&out).unwrap() == expected,
        "the resumed output differs from an uninterrupted run"
    );
    // A finished output is not redone: a further run writes nothing new.
    resume_to(&corpus, &out);
    assert!(std::fs::read(&out).unwrap() == expected);
}

#[test]
fn records_from_stdin_come_out_while_the_input_is_still_open() {
    use std::io::{BufRead, Write};
    let (tmp, dir) = crate::common::tiny_model_dir();
    let corpus = tmp.path().join("corpus.jsonl");
    write_records(&corpus, 200);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mawqif"))
        .args(["classify", "--input", "jsonl", "--model"])
        .arg(&dir)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Far more than one batch of sentences, and stdin stays open: a program
    // that waited for the end of its input would never answer.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(&corpus).unwrap()).unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut out = std::io::BufReader::new(stdout);
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        tx.send(line).ok();
        // Drain the rest so the writer never blocks.
        std::io::copy(&mut out, &mut std::io::sink()).unwrap();
    });
    let first = rx.recv_timeout(std::time::Duration::from_secs(120));
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let first = first.expect("no output while stdin was open: the run does not stream");
    assert!(first.contains("\"id\":\"doc-0\""), "{first}");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
