//! `mawqif … | head`: when the reader of standard output goes away, every
//! command that writes results there stops quietly with status 0 (no panic,
//! no "Broken pipe" error).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::mock_hub::{MockHub, MockRepo};
use crate::common::stderr;

/// A reader that is gone before the command writes anything: the first
/// write fails with EPIPE, whatever the size of the output.
fn into_closed_pipe(mut cmd: Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cmd.stdout(writer).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // `cmd` keeps a copy of the write end until dropped; the child has its own.
    drop(cmd);
    child.wait_with_output().unwrap()
}

/// `| head -1`: read one line, then close.
fn read_one_line(mut cmd: Command) -> (String, Output) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    {
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
    }
    (line, child.wait_with_output().unwrap())
}

fn mawqif(args: &[&str], home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mawqif"));
    cmd.args(args)
        .env("HF_HOME", home.join("hf"))
        .env("MAWQIF_CACHE", home.join("mawqif"))
        .env("MAWQIF_TRAIN_DATA", "")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN");
    for var in crate::common::PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd
}

fn assert_quiet_success(what: &str, o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{what}: {}", stderr(o));
    assert_eq!(stderr(o), "", "{what}");
}

#[test]
fn every_command_stops_quietly_when_stdout_closes() {
    let home = tempfile::tempdir().unwrap();
    // Output far bigger than a pipe's buffer (64 KiB).
    let big = home.path().join("big.txt");
    std::fs::write(&big, crate::common::article().repeat(60)).unwrap();
    let big = big.to_str().unwrap();
    let gold = "eval/fixtures/article.gold.jsonl";
    let quiet: [(&str, Vec<&str>); 5] = [
        ("models", vec!["models"]),
        ("segment", vec!["segment", big]),
        (
            "classify",
            vec!["classify", "--model", "cues", "--format", "jsonl", big],
        ),
        (
            "classify table",
            vec!["classify", "--model", "cues", "--format", "table", big],
        ),
        (
            "eval",
            vec![
                "eval", "--gold", gold, "--model", "cues", "--model", "majority",
            ],
        ),
    ];
    for (what, args) in &quiet {
        let o = into_closed_pipe(mawqif(args, home.path()));
        assert_quiet_success(what, &o);
    }
    for (what, args) in &quiet[..3] {
        let (line, o) = read_one_line(mawqif(args, home.path()));
        assert!(!line.is_empty(), "{what}");
        assert_quiet_success(what, &o);
    }
}

#[test]
fn download_and_train_keep_their_work_when_stdout_closes() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let sha = "1111111111111111111111111111111111111111";
    let mut hub = MockHub::start(vec![MockRepo {
        id: "tiny/test-bert".into(),
        commits: [(sha.to_string(), MockRepo::files_from_dir(&dir))].into(),
        refs: [("main".to_string(), sha.to_string())].into(),
        ..Default::default()
    }]);
    let home = tempfile::tempdir().unwrap();
    let mut cmd = mawqif(&["download", "tiny/test-bert"], home.path());
    cmd.env("HF_ENDPOINT", &hub.url);
    let o = into_closed_pipe(cmd);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // stderr holds the download report and nothing else.
    let err = stderr(&o);
    assert!(err.starts_with("tiny/test-bert@main → commit"), "{err}");
    assert!(!err.contains("error") && !err.contains("panicked"), "{err}");
    assert!(home
        .path()
        .join("hf/hub/models--tiny--test-bert/snapshots")
        .join(sha)
        .join("model.safetensors")
        .is_file());
    hub.stop();

    let out = tmp.path().join("trained");
    let mut cmd = mawqif(
        &[
            "train",
            "--model",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--data",
            "eval/train/gold/a01.gold.jsonl",
            "--data",
            "eval/train/gold/b01.gold.jsonl",
            "--dev-fraction",
            "0.5",
            "--epochs",
            "20",
        ],
        home.path(),
    );
    cmd.env("MAWQIF_CACHE", tmp.path().join("cache"));
    let o = into_closed_pipe(cmd);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains("error") && !err.contains("panicked"), "{err}");
    assert!(out.join("head.safetensors").is_file(), "the head was saved");
}
