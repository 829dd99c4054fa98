//! The `mawqif` binary on good and bad input: clear errors, non-zero exits, no panics.

use crate::common::{mawqif, stderr, stdout};

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

/// `mawqif classify --model cues --format FORMAT FILE`.
fn classify_cues(format: &str, file: &str) -> std::process::Output {
    mawqif(&["classify", "--model", "cues", "--format", format, file])
}

fn assert_clean_failure(o: &std::process::Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
}

/// `classify --format jsonl` of the article fixture with `head` over the model in `dir`.
fn classify_article_with_head(
    dir: &std::path::Path,
    head: &std::path::Path,
) -> std::process::Output {
    mawqif(&[
        "classify",
        "--model",
        dir.to_str().unwrap(),
        "--head",
        head.to_str().unwrap(),
        "--format",
        "jsonl",
        "eval/fixtures/article.txt",
    ])
}

#[test]
fn classify_jsonl_with_tiny_model() {
    let (_tmp, dir) = crate::common::tiny_model_dir();
    let o = mawqif(&[
        "classify",
        "--model",
        dir.to_str().unwrap(),
        "--format",
        "jsonl",
        "eval/fixtures/article.txt",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 49);
    for v in &lines {
        for key in ["file", "index", "start", "end", "text", "label", "scores"] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
    }
    // TSV and table render too.
    for fmt in ["tsv", "table"] {
        let o = mawqif(&[
            "classify",
            "--model",
            dir.to_str().unwrap(),
            "--format",
            fmt,
            "eval/fixtures/article.txt",
        ]);
        assert!(
            o.status.success() && stdout(&o).lines().count() >= 49,
            "{fmt}"
        );
    }
}

#[test]
fn bad_input_files() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let model = dir.to_str().unwrap();
    let t = tmp.path();
    let cases = [
        (
            write(t, "bad.txt", &[0xd8, 0xa7, 0xff, 0x20]),
            "not valid UTF-8",
        ),
        (write(t, "empty.txt", b""), "is empty"),
        (write(t, "blank.txt", b"\n  \n"), "is empty"),
        (
            write(t, "bin.dat", &[0x7f, b'E', b'L', b'F', 0, 0, 1]),
            "binary",
        ),
        (
            write(t, "long.txt", vec!["كلمة"; 10_000].join(" ").as_bytes()),
            "more than",
        ),
    ];
    for (path, needle) in &cases {
        let o = mawqif(&["classify", "--model", model, "--format", "jsonl", path]);
        assert_clean_failure(&o, needle);
    }
    let o = mawqif(&[
        "classify",
        "--model",
        model,
        "--format",
        "jsonl",
        "/nonexistent/file.txt",
    ]);
    assert_clean_failure(&o, "/nonexistent/file.txt");
}

#[test]
fn bad_model_directories() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let o = mawqif(&[
        "classify",
        "--model",
        "/nonexistent/model",
        "eval/fixtures/article.txt",
    ]);
    assert_clean_failure(&o, "does not exist");

    // Truncated weights.
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let o = mawqif(&[
        "classify",
        "--model",
        dir.to_str().unwrap(),
        "eval/fixtures/article.txt",
    ]);
    assert_clean_failure(&o, "model.safetensors");
    assert_clean_failure(&o, "truncated");

    // Weights of the wrong shape for config.json.
    let cfg_path = dir.join("config.json");
    crate::common::tiny_model(&dir);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["intermediate_size"] = 48.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let o = mawqif(&[
        "classify",
        "--model",
        dir.to_str().unwrap(),
        "eval/fixtures/article.txt",
    ]);
    assert_clean_failure(&o, "do not match config.json");

    // Missing pieces, each named.
    let empty = tmp.path().join("empty-model");
    std::fs::create_dir_all(&empty).unwrap();
    let o = mawqif(&[
        "classify",
        "--model",
        empty.to_str().unwrap(),
        "eval/fixtures/article.txt",
    ]);
    assert_clean_failure(&o, "config.json");
    std::fs::write(empty.join("config.json"), "{ not json").unwrap();
    let o = mawqif(&[
        "classify",
        "--model",
        empty.to_str().unwrap(),
        "eval/fixtures/article.txt",
    ]);
    assert_clean_failure(&o, "malformed");

    // No head anywhere and no training data to make one.
    crate::common::tiny_model(&dir);
    std::fs::remove_dir_all(dir.join("head")).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mawqif"))
        .args([
            "classify",
            "--model",
            dir.to_str().unwrap(),
            "eval/fixtures/article.txt",
        ])
        .env("MAWQIF_CACHE", tmp.path().join("cache"))
        .env("MAWQIF_TRAIN_DATA", "")
        .output()
        .unwrap();
    assert_clean_failure(&o, "no classifier head");
}

#[test]
fn a_model_without_head_gets_one_trained_on_first_use() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    std::fs::remove_dir_all(dir.join("head")).unwrap();
    // A copy of some training texts, so that the test can change the labels.
    let data = tmp.path().join("gold");
    std::fs::create_dir(&data).unwrap();
    let mut gold: Vec<_> = std::fs::read_dir("eval/train/gold")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    gold.sort();
    for f in &gold[..40] {
        std::fs::copy(f, data.join(f.file_name().unwrap())).unwrap();
    }
    let run = |train_data: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mawqif"))
            .args([
                "classify",
                "--model",
                dir.to_str().unwrap(),
                "--format",
                "jsonl",
                "eval/fixtures/article.txt",
            ])
            .env("MAWQIF_CACHE", tmp.path().join("cache"))
            .env("MAWQIF_TRAIN_DATA", train_data)
            .output()
            .unwrap()
    };
    let data_arg = data.to_str().unwrap();
    let first = run(data_arg);
    assert!(first.status.success(), "{}", stderr(&first));
    let sentences: usize = gold[..40]
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
        .sum();
    assert!(
        stderr(&first).contains(&format!("training one on {sentences} labelled sentences")),
        "{}",
        stderr(&first)
    );
    let auto_heads = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(tmp.path().join("cache/heads"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("tiny@local+"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(auto_heads().len(), 1);
    let second = run(data_arg);
    assert!(
        stderr(&second).contains("using the head trained earlier"),
        "{}",
        stderr(&second)
    );
    assert_eq!(stdout(&first), stdout(&second));
    assert_eq!(stdout(&first).lines().count(), 49);

    // With training turned off, the head trained earlier still serves.
    let without_data = run("");
    assert!(without_data.status.success(), "{}", stderr(&without_data));
    assert!(stderr(&without_data).contains("using the head trained earlier"));
    assert_eq!(stdout(&first), stdout(&without_data));

    // The same files reached by another spelling of their folder are the
    // same data: no retraining.
    let same_data = run(&format!("{data_arg}/."));
    assert!(
        stderr(&same_data).contains("using the head trained earlier"),
        "{}",
        stderr(&same_data)
    );

    // New labels make the cached head stale: it is trained again in place.
    std::fs::remove_file(data.join(gold[0].file_name().unwrap())).unwrap();
    let trains_again = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", stderr(o));
        assert!(stderr(o).contains("training one on"), "{}", stderr(o));
    };
    trains_again(&run(data_arg));
    assert_eq!(auto_heads().len(), 1);

    // A damaged cached head is trained again, not refused.
    let cached = tmp.path().join("cache/heads").join(&auto_heads()[0]);
    std::fs::write(cached.join("head.safetensors"), b"not tensors").unwrap();
    trains_again(&run(data_arg));

    // So does another profile: the encoder's id and revision are the same,
    // but it sees other input, so its head is kept apart.
    let profile = serde_json::json!({
        "id": "tiny", "revision": "local", "prefix": "query: ",
        "max_length": crate::common::MAX_POSITIONS,
    });
    std::fs::write(dir.join("mawqif.json"), profile.to_string()).unwrap();
    trains_again(&run(data_arg));
    assert_eq!(auto_heads().len(), 2);
}

#[test]
fn segment_prints_units() {
    let o = mawqif(&["segment", "eval/fixtures/article.txt"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o).lines().count(), 49);
}

#[test]
fn classify_help_states_the_unsure_threshold_the_table_uses() {
    // The help text is a literal; this keeps it in step with the constant.
    let o = mawqif(&["classify", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let threshold = format!("p < {:.2}", mawqif::report::UNSURE_BELOW);
    assert!(
        stdout(&o).contains(&threshold),
        "classify --help does not mention {threshold}"
    );
}

#[test]
fn cues_baseline_from_the_cli() {
    let o = classify_cues("jsonl", "eval/fixtures/article.txt");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 49);
}

#[test]
fn eval_reports_baselines_and_rejects_bad_gold() {
    let o = mawqif(&[
        "eval",
        "--gold",
        "eval/fixtures/article.gold.jsonl",
        "--model",
        "cues",
        "--model",
        "majority",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in [
        "macro-F1",
        "Cohen's kappa",
        "confusion of cues",
        "boundary P 100.0",
        "NOT BETTER THAN CUES",
    ] {
        assert!(out.contains(needle), "missing {needle}:\n{out}");
    }
    let o = mawqif(&[
        "eval",
        "--gold",
        "eval/fixtures/article.gold.jsonl",
        "--model",
        "cues",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "mawqif-eval/1");
    assert_eq!(v["systems"][0]["matched"], 49);

    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let gold = std::fs::read_to_string("eval/fixtures/article.gold.jsonl").unwrap();
    // Any label name makes a scheme, but a name with a space is no label.
    let bad_label = gold.replacen("\"label\": \"report\"", "\"label\": \"pure report\"", 1);
    let dup = format!("{gold}{}\n", gold.lines().next().unwrap());
    for (name, content, needle) in [
        (
            "bad_label.gold.jsonl",
            bad_label.as_str(),
            ":1: bad label name \"pure report\"",
        ),
        ("dup.gold.jsonl", dup.as_str(), ":50: duplicate id"),
        ("empty.gold.jsonl", "", "is empty"),
    ] {
        let p = write(t, name, content.as_bytes());
        let o = mawqif(&["eval", "--gold", &p, "--model", "cues"]);
        assert_clean_failure(&o, needle);
    }
    // A prediction file for another text.
    let other = write(
        t,
        "other.txt",
        "خبر أول عن موضوع آخر تماما.\nوقال الوزير كلاما.\n".as_bytes(),
    );
    let o = classify_cues("jsonl", &other);
    let pred = write(t, "other.jsonl", &o.stdout);
    let o = mawqif(&[
        "eval",
        "--gold",
        "eval/fixtures/article.gold.jsonl",
        "--pred",
        &pred,
    ]);
    assert_clean_failure(&o, "another text");
}

#[test]
fn eval_scores_a_prediction_file_and_checkthat_tsv() {
    let tmp = tempfile::tempdir().unwrap();
    let o = classify_cues("jsonl", "eval/fixtures/article.txt");
    let pred = write(tmp.path(), "pred.jsonl", &o.stdout);
    let o = mawqif(&[
        "eval",
        "--gold",
        "eval/fixtures/article.gold.jsonl",
        "--pred",
        &pred,
        "--model",
        "cues",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The prediction file and the built-in baseline are the same system.
    assert_eq!(
        v["systems"][0]["metrics"]["accuracy"],
        v["systems"][1]["metrics"]["accuracy"]
    );

    // CheckThat! TSV written by classify is read back by eval, joined on
    // sentence_id: a gold file with the rows reversed and 5 labels changed
    // must score exactly 44 of 49.
    let o = classify_cues("checkthat", "eval/fixtures/article.txt");
    let written = write(tmp.path(), "pred.tsv", &o.stdout);
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let mut rows: Vec<String> = lines.map(String::from).collect();
    assert_eq!(rows.len(), 49);
    for row in rows.iter_mut().step_by(10) {
        let (rest, label) = row.rsplit_once('\t').unwrap();
        let other = if label == "report" {
            "opinion"
        } else {
            "report"
        };
        *row = format!("{rest}\t{other}");
    }
    rows.reverse();
    let gold = write(
        tmp.path(),
        "gold.tsv",
        format!("{header}\n{}\n", rows.join("\n")).as_bytes(),
    );
    let o = mawqif(&[
        "eval",
        "--gold",
        &gold,
        "--gold-format",
        "checkthat",
        "--pred",
        &written,
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["systems"][0]["matched"], 49);
    let accuracy = v["systems"][0]["metrics"]["accuracy"]["value"]
        .as_f64()
        .unwrap();
    assert!((accuracy - 44.0 / 49.0).abs() < 1e-9, "{accuracy}");

    let tsv = "sentence_id\tsentence\tlabel\ns1\tقال الوزير إن الخطة جاهزة.\tquotation\ns2\tوصل الوفد إلى العاصمة.\treport\n";
    let gold = write(tmp.path(), "g.tsv", tsv.as_bytes());
    let o = mawqif(&[
        "eval",
        "--gold",
        &gold,
        "--gold-format",
        "checkthat",
        "--model",
        "cues",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["systems"][0]["matched"], 2);
}

#[test]
fn training_on_eval_fixtures_is_refused() {
    let o = mawqif(&[
        "train",
        "--data",
        "eval/fixtures/article.gold.jsonl",
        "--out",
        "/tmp/never",
    ]);
    assert_clean_failure(&o, "held-out evaluation data");
    let o = mawqif(&["train", "--data", "eval/fixtures", "--out", "/tmp/never"]);
    assert_clean_failure(&o, "held-out evaluation data");
}

#[test]
fn train_a_head_on_the_tiny_model() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let out = tmp.path().join("trained");
    let cache = tmp.path().join("cache");
    let train = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mawqif"))
            .args([
                "train",
                "--model",
                dir.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .args(["--dev-fraction", "0.25", "--epochs", "50"])
            .args(["a01", "b01", "c01", "d01"].iter().flat_map(|t| {
                [
                    "--data".to_string(),
                    format!("eval/train/gold/{t}.gold.jsonl"),
                ]
            }))
            .env("MAWQIF_CACHE", &cache)
            .output()
            .unwrap()
    };
    let o = train();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("dev split"));
    let first = std::fs::read(out.join("head.safetensors")).unwrap();
    // Same data and seed: same head bytes (second run hits the embedding cache).
    let o2 = train();
    assert!(o2.status.success());
    assert!(
        !stderr(&o2).contains("embedding "),
        "cache not used: {}",
        stderr(&o2)
    );
    assert_eq!(first, std::fs::read(out.join("head.safetensors")).unwrap());
    let o = classify_article_with_head(&dir, &out);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A frozen head can read the previous unit's vector too: `head.json` says
/// so, the head has room for it, and `classify` feeds it.
#[test]
fn frozen_head_with_context_embedding() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let out = tmp.path().join("context");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mawqif"))
        .args(["train", "--model", dir.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap(), "--context-embedding"])
        .args(["--dev-fraction", "0", "--epochs", "20"])
        .args(["--data", "eval/train/gold/a01.gold.jsonl"])
        .env("MAWQIF_CACHE", tmp.path().join("cache"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("head.json")).unwrap()).unwrap();
    let features = &json["features"];
    assert_eq!(features["context_embedding"], true, "{json}");
    let head = mawqif::head::Head::load(&out).unwrap();
    let dim = features["embedding_dim"].as_u64().unwrap() as usize;
    assert!(
        head.feature_mean.len() > 2 * dim,
        "{}",
        head.feature_mean.len()
    );
    let o = classify_article_with_head(&dir, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 49);
}

/// Two fine-tuned runs that differ only in --run-seed average into one head
/// that `classify` uses, also when one respelled its training units; a lone
/// run, or --run-seed or --web-spelling without --fine-tune, is a clear error.
#[test]
fn average_heads_of_two_runs() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let data = [
        "--data",
        "eval/train/gold/a01.gold.jsonl",
        "--data",
        "eval/train/gold/b02.gold.jsonl",
    ];
    let train = |extra: &[&str], out: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mawqif"))
            .args(["train", "--model", dir.to_str().unwrap()])
            .args(["--out", tmp.path().join(out).to_str().unwrap()])
            .args(["--dev-fraction", "0.5"])
            .args(data)
            .args(extra)
            .env("MAWQIF_CACHE", tmp.path().join("cache"))
            .output()
            .unwrap()
    };
    let o = train(&["--run-seed", "3"], "frozen");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--fine-tune only"), "{}", stderr(&o));
    let tuned = [
        "--fine-tune",
        "--fine-tune-layers",
        "1",
        "--fine-tune-epochs",
        "1",
    ];
    let o = train(&["--web-spelling", "0.3"], "frozen");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--fine-tune only"), "{}", stderr(&o));
    let o = train(&[&tuned[..], &["--web-spelling", "1.5"]].concat(), "bad");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("in [0, 1]"), "{}", stderr(&o));
    // Run 2 respells half its training units, so its features standardize
    // differently from run 1's: the average must still be possible.
    for (seed, respell) in [("1", "0"), ("2", "0.5")] {
        let extra = ["--run-seed", seed, "--web-spelling", respell];
        let o = train(&[&tuned[..], &extra[..]].concat(), seed);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let run_dir = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let (one, two, avg) = (run_dir("1"), run_dir("2"), run_dir("avg"));
    let o = mawqif(
        &[
            &["average-heads", &one, &two, "--out", &avg, "--model"][..],
            &[dir.to_str().unwrap()],
            &data[..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        table.contains("dev split") && table.contains("average"),
        "{table}"
    );
    let o = classify_article_with_head(&dir, std::path::Path::new(&avg));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 49);
    let o = mawqif(&["average-heads", &one, "--out", &run_dir("lone")]);
    assert!(!o.status.success());
}

#[test]
fn cross_validation_by_text_frozen_and_fine_tuned() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    for extra in [
        &[][..],
        &[
            "--fine-tune",
            "--fine-tune-layers",
            "1",
            "--fine-tune-epochs",
            "1",
        ][..],
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_mawqif"))
            .args([
                "train",
                "--model",
                dir.to_str().unwrap(),
                "--out",
                tmp.path().join("cv").to_str().unwrap(),
            ])
            .args([
                "--data",
                "eval/train/gold/a01.gold.jsonl",
                "--data",
                "eval/train/gold/b01.gold.jsonl",
            ])
            .args([
                "--data",
                "eval/train/gold/c01.gold.jsonl",
                "--cv-by-text",
                "3",
                "--dev-fraction",
                "0.34",
            ])
            .args(extra)
            .env("MAWQIF_CACHE", tmp.path().join("cache"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains("cross-validation by text (3 folds"),
            "{}",
            stdout(&o)
        );
        assert!(stderr(&o).matches("fold ").count() >= 3, "{}", stderr(&o));
    }
}

#[test]
fn bench_reports_json_and_checks_foreign_embeddings() {
    let (tmp, dir) = crate::common::tiny_model_dir();
    let sentences = write(
        tmp.path(),
        "s.txt",
        "قال الوزير إن الحكومة ستدعم المشروع\nوأكد المجلس أن القرار صائب\nهذا رأي الكاتب\n"
            .as_bytes(),
    );
    let dump = tmp.path().join("ours.f32");
    let head = dir.join("head");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "--engine",
            "f32",
            "bench",
            "--model",
            dir.to_str().unwrap(),
            "--head",
            head.to_str().unwrap(),
            "--sentences-file",
            &sentences,
            "--latency-runs",
            "3",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| mawqif(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let o = run(args(&["--dump-embeddings", dump.to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(r["system"], "mawqif-f32");
    assert_eq!(r["sentences"], 3);
    assert!(r["sentences_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["peak_rss_mb"].as_f64().unwrap() > 0.0);
    assert_eq!(
        std::fs::metadata(&dump).unwrap().len(),
        3 * crate::common::HIDDEN as u64 * 4
    );
    // Embeddings from another engine (candle, the reference) agree closely...
    let candle_dump = tmp.path().join("candle.f32");
    let mut candle_args = args(&["--dump-embeddings", candle_dump.to_str().unwrap()]);
    candle_args[1] = "candle".into();
    let o = run(candle_args);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(args(&[
        "--compare-embeddings",
        candle_dump.to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(r["label_agreement"], 1.0);
    assert!(r["cosine_min"].as_f64().unwrap() > 0.9999, "{r}");
    // ...and a file with two sentences swapped is caught.
    let bytes = std::fs::read(&candle_dump).unwrap();
    let row = crate::common::HIDDEN * 4;
    let mut swapped = bytes[row..2 * row].to_vec();
    swapped.extend_from_slice(&bytes[..row]);
    swapped.extend_from_slice(&bytes[2 * row..]);
    let swapped = write(tmp.path(), "swapped.f32", &swapped);
    let o = run(args(&["--compare-embeddings", &swapped]));
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(r["cosine_min"].as_f64().unwrap() < 0.99, "{r}");
    // A wrong-sized file is refused.
    let short = write(tmp.path(), "short.f32", &[0u8; 12]);
    let o = run(args(&["--compare-embeddings", &short]));
    assert_clean_failure(&o, "sentences");
    let o = mawqif(&["--engine", "fp8", "segment", &sentences]);
    assert_clean_failure(&o, "unknown engine");
}
