//! Label sets other than the four stance labels, end to end (train with
//! frozen vectors, fine-tuning and CV; classify; eval), the `--map` option,
//! and CheckThat! files checked against the acceptance rules of the lab's
//! official scorer.
//!
//! The scorer (`task1/scorer/evaluate.py` of the CLEF 2025 CheckThat! lab,
//! as in Task 2 of 2023–24) is not vendored: its rules are restated here.
//! It reads both files with pandas `read_csv(sep="\t", quoting=QUOTE_NONE)`
//! (the first row is the header) and accepts the predictions when
//! 1. they have as many rows as the gold file;
//! 2. predictions have columns `label` and `sentence_id`, gold has `sentence_id`;
//! 3. the set of predicted labels is {SUBJ, OBJ}, {SUBJ} or {OBJ};
//! 4. an inner join on `sentence_id` keeps every prediction row;
//! 5. gold has a `label` column.
//!
//! Then it reports sklearn's macro-F1 (over the labels present in gold or
//! predictions, zero_division=0) and accuracy.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::common::{mawqif, stderr, stdout};

/// The sentences of the made-up data: (id, sentence, SUBJ/OBJ, pos/neg/neu).
const SENTENCES: &[(&str, &str, &str, &str)] = &[
    (
        "news_01_1",
        "افتتحت البلدية جسرا جديدا فوق النهر صباح الأحد.",
        "OBJ",
        "neu",
    ),
    (
        "news_01_2",
        "بلغ طول الجسر أربعمئة متر وكلف ثلاثة ملايين.",
        "OBJ",
        "neu",
    ),
    (
        "news_01_3",
        "إنه أجمل جسر رأيته في حياتي بلا شك.",
        "SUBJ",
        "pos",
    ),
    (
        "news_02_1",
        "أعلنت الوزارة جدول الامتحانات للعام الدراسي.",
        "OBJ",
        "neu",
    ),
    (
        "news_02_2",
        "هذا الجدول ظالم ومرهق للطلاب المساكين.",
        "SUBJ",
        "neg",
    ),
    (
        "news_02_3",
        "تبدأ الامتحانات في العاشر من حزيران.",
        "OBJ",
        "neu",
    ),
    (
        "news_03_1",
        "فاز الفريق المحلي بالمباراة بهدفين نظيفين.",
        "OBJ",
        "pos",
    ),
    (
        "news_03_2",
        "كان أداء الحارس رائعا ومبهرا حقا.",
        "SUBJ",
        "pos",
    ),
    (
        "news_03_3",
        "للأسف خيب المدرب آمال الجماهير مرة أخرى.",
        "SUBJ",
        "neg",
    ),
    (
        "news_04_1",
        "ارتفعت أسعار الخبز بنسبة عشرة في المئة.",
        "OBJ",
        "neg",
    ),
    (
        "news_04_2",
        "يجب على الحكومة أن تخجل من هذا الغلاء الفاحش.",
        "SUBJ",
        "neg",
    ),
    (
        "news_04_3",
        "وصل عدد المخابز في المدينة إلى مئتين.",
        "OBJ",
        "neu",
    ),
    (
        "news_05_1",
        "هطلت أمطار غزيرة على المناطق الشمالية.",
        "OBJ",
        "neu",
    ),
    (
        "news_05_2",
        "أظن أن هذا الشتاء سيكون الأقسى منذ سنوات.",
        "SUBJ",
        "neg",
    ),
    (
        "news_05_3",
        "ما أجمل رائحة المطر في الصباح الباكر.",
        "SUBJ",
        "pos",
    ),
    (
        "news_06_1",
        "عقد المجلس جلسته الأسبوعية يوم الخميس.",
        "OBJ",
        "neu",
    ),
];

/// Sentences to classify: their own ids, not in the training data.
const UNSEEN: &[(&str, &str, &str)] = &[
    ("Test_9_1", "أغلقت المدارس أبوابها بسبب العاصفة.", "OBJ"),
    ("Test_9_2", "هذا القرار حكيم جدا ويستحق الثناء.", "SUBJ"),
    ("MIS_77-x_03", "قال \"المتحدث\" إن الاجتماع تأجل.", "OBJ"),
];

fn tsv(rows: impl Iterator<Item = [String; 3]>) -> String {
    let mut s = String::from("sentence_id\tsentence\tlabel\n");
    for r in rows {
        s.push_str(&r.join("\t"));
        s.push('\n');
    }
    s
}

fn write_data(dir: &Path) -> (String, String, String) {
    let two = tsv(SENTENCES
        .iter()
        .map(|(id, s, l, _)| [id.to_string(), s.to_string(), l.to_string()]));
    let three = tsv(SENTENCES
        .iter()
        .map(|(id, s, _, l)| [id.to_string(), s.to_string(), l.to_string()]));
    let unseen = tsv(UNSEEN
        .iter()
        .map(|(id, s, l)| [id.to_string(), s.to_string(), l.to_string()]));
    let put = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    (
        put("train_two.tsv", &two),
        put("train_three.tsv", &three),
        put("unseen.tsv", &unseen),
    )
}

/// A tab-separated file with a header row, read as the lab's scorer reads it
/// (no quoting): column name → values.
type Table = (Vec<String>, Vec<HashMap<String, String>>);

fn read_table(text: &str) -> Result<Table, String> {
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let header: Vec<String> = lines
        .next()
        .ok_or("empty file")?
        .split('\t')
        .map(String::from)
        .collect();
    let mut rows = Vec::new();
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != header.len() {
            return Err(format!("row with {} fields: {line:?}", cols.len()));
        }
        rows.push(
            header
                .iter()
                .cloned()
                .zip(cols.iter().map(|c| c.to_string()))
                .collect(),
        );
    }
    Ok((header, rows))
}

/// The official scorer's checks, in its order; its error message on refusal.
fn scorer_accepts(pred: &str, gold: &str) -> Result<(), String> {
    let (pred_cols, pred_rows) = read_table(pred)?;
    let (gold_cols, gold_rows) = read_table(gold)?;
    if pred_rows.len() != gold_rows.len() {
        return Err("Error! Different number of instances in the files".into());
    }
    let has = |cols: &[String], c: &str| cols.iter().any(|x| x == c);
    if !(has(&pred_cols, "label")
        && has(&pred_cols, "sentence_id")
        && has(&gold_cols, "sentence_id"))
    {
        return Err("Error! Wrong columns".into());
    }
    let labels: BTreeSet<&str> = pred_rows.iter().map(|r| r["label"].as_str()).collect();
    let ok = labels == BTreeSet::from(["OBJ", "SUBJ"])
        || labels == BTreeSet::from(["OBJ"])
        || labels == BTreeSet::from(["SUBJ"]);
    if !ok {
        return Err("Error! Wrong labels".into());
    }
    let joined = pred_rows
        .iter()
        .map(|p| {
            gold_rows
                .iter()
                .filter(|g| g["sentence_id"] == p["sentence_id"])
                .count()
        })
        .sum::<usize>();
    if joined != pred_rows.len() {
        return Err("Error! Different ids in the two files".into());
    }
    if !has(&gold_cols, "label") {
        return Err("Error! No labels in the gold data file".into());
    }
    Ok(())
}

/// sklearn's macro-F1 (labels in gold or predictions, zero_division=0) of a
/// submission against gold, joined on sentence_id.
fn scorer_macro_f1(pred: &str, gold: &str) -> f64 {
    let (_, pred_rows) = read_table(pred).unwrap();
    let (_, gold_rows) = read_table(gold).unwrap();
    let gold_of: HashMap<&str, &str> = gold_rows
        .iter()
        .map(|g| (g["sentence_id"].as_str(), g["label"].as_str()))
        .collect();
    let pairs: Vec<(&str, &str)> = pred_rows
        .iter()
        .map(|p| (gold_of[p["sentence_id"].as_str()], p["label"].as_str()))
        .collect();
    let labels: BTreeSet<&str> = pairs.iter().flat_map(|(g, p)| [*g, *p]).collect();
    let f1s: Vec<f64> = labels
        .iter()
        .map(|l| {
            let tp = pairs.iter().filter(|(g, p)| g == l && p == l).count() as f64;
            let predicted = pairs.iter().filter(|(_, p)| p == l).count() as f64;
            let support = pairs.iter().filter(|(g, _)| g == l).count() as f64;
            if tp == 0.0 {
                0.0
            } else {
                2.0 * tp / (predicted + support)
            }
        })
        .collect();
    f1s.iter().sum::<f64>() / f1s.len() as f64
}

#[test]
fn the_scorer_rules_refuse_what_the_lab_refuses() {
    let gold = "sentence_id\tsentence\tlabel\na_1\tس\tSUBJ\nb_2\tص\tOBJ\n";
    assert!(scorer_accepts("sentence_id\tlabel\nb_2\tOBJ\na_1\tSUBJ\n", gold).is_ok());
    for (pred, error) in [
        ("sentence_id\tlabel\na_1\tSUBJ\n", "Different number"),
        ("id\tlabel\na_1\tSUBJ\nb_2\tOBJ\n", "Wrong columns"),
        (
            "sentence_id\tlabel\na_1\topinion\nb_2\treport\n",
            "Wrong labels",
        ),
        ("sentence_id\tlabel\n0\tSUBJ\n1\tOBJ\n", "Different ids"),
    ] {
        let e = scorer_accepts(pred, gold).unwrap_err();
        assert!(e.contains(error), "{pred:?}: {e}");
    }
    close(
        scorer_macro_f1("sentence_id\tlabel\na_1\tSUBJ\nb_2\tSUBJ\n", gold),
        (2.0 / 3.0) / 2.0,
    );
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

fn run(args: &[&str], cache: &Path) -> std::process::Output {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mawqif"))
        .args(args)
        .env("MAWQIF_CACHE", cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    o
}

fn head_labels(head: &Path) -> Vec<String> {
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(head.join("head.json")).unwrap()).unwrap();
    spec["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_two_label_scheme_trains_classifies_a_checkthat_file_and_scores() {
    let (tmp, model) = crate::common::tiny_model_dir();
    let model = model.to_str().unwrap().to_string();
    let (two, _, unseen) = write_data(tmp.path());
    let cache = tmp.path().join("cache");
    for (name, extra) in [
        ("frozen", &["--cv-by-text", "3"][..]),
        (
            "tuned",
            &[
                "--fine-tune",
                "--fine-tune-layers",
                "1",
                "--fine-tune-epochs",
                "1",
                "--cv-by-text",
                "2",
            ][..],
        ),
    ] {
        let head = tmp.path().join(name);
        let mut args = vec!["train", "--model", &model, "--data", &two];
        args.extend(["--dev-fraction", "0.25", "--out", head.to_str().unwrap()]);
        args.extend(extra);
        let o = run(&args, &cache);
        assert!(
            stdout(&o).contains("cross-validation by text"),
            "{}",
            stdout(&o)
        );
        assert_eq!(head_labels(&head), ["OBJ", "SUBJ"], "{name}");

        // A submission for the lab's scorer: its ids, its labels, its row order.
        let o = run(
            &[
                "classify",
                "--model",
                &model,
                "--head",
                head.to_str().unwrap(),
            ]
            .into_iter()
            .chain(["--input", "checkthat", &unseen])
            .collect::<Vec<_>>(),
            &cache,
        );
        let submission = stdout(&o);
        let gold = std::fs::read_to_string(&unseen).unwrap();
        scorer_accepts(&submission, &gold).unwrap_or_else(|e| panic!("{e}\n{submission}"));
        let ids: Vec<&str> = submission
            .lines()
            .skip(1)
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        assert_eq!(ids, ["Test_9_1", "Test_9_2", "MIS_77-x_03"]);
        assert!(submission.starts_with("sentence_id\tlabel\n"));

        // eval reads the two-column submission and agrees with the scorer's macro-F1.
        let pred = tmp.path().join(format!("{name}.tsv"));
        std::fs::write(&pred, &submission).unwrap();
        let o = run(
            &[
                "eval",
                "--gold",
                &unseen,
                "--gold-format",
                "checkthat",
                "--pred",
                pred.to_str().unwrap(),
                "--model",
                &model,
                "--head",
                head.to_str().unwrap(),
                "--format",
                "json",
            ],
            &cache,
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let (file, model_run) = (&v["systems"][0], &v["systems"][1]);
        assert_eq!(file["matched"], 3);
        close(
            file["metrics"]["macro_f1"]["value"].as_f64().unwrap(),
            scorer_macro_f1(&submission, &gold),
        );
        // The same head run by eval on the gold sentences: the same predictions.
        assert_eq!(
            file["metrics"]["confusion"],
            model_run["metrics"]["confusion"]
        );
        assert_eq!(file["metrics"]["confusion"].as_array().unwrap().len(), 2);
        // No stance gold: no cue baseline to compare with.
        assert!(v["cues_macro_f1"].is_null());
    }
}

#[test]
fn a_three_label_scheme_end_to_end() {
    let (tmp, model) = crate::common::tiny_model_dir();
    let model = model.to_str().unwrap().to_string();
    let (_, three, _) = write_data(tmp.path());
    let cache = tmp.path().join("cache");
    let head = tmp.path().join("head3");
    // --labels fixes the output order; a list that leaves a label out is refused.
    let bad = mawqif(&[
        "train",
        "--model",
        &model,
        "--data",
        &three,
        "--labels",
        "neg,pos",
        "--out",
        "/tmp/never",
    ]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("neu"), "{}", stderr(&bad));
    run(
        &[
            "train",
            "--model",
            &model,
            "--data",
            &three,
            "--labels",
            "pos,neu,neg",
            "--cv-by-text",
            "3",
            "--dev-fraction",
            "0",
            "--out",
            head.to_str().unwrap(),
        ],
        &cache,
    );
    assert_eq!(head_labels(&head), ["pos", "neu", "neg"]);
    let o = run(
        &[
            "classify",
            "--model",
            &model,
            "--head",
            head.to_str().unwrap(),
            "--input",
            "checkthat",
            "--format",
            "jsonl",
            &three,
        ],
        &cache,
    );
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    // One unit per row (no re-segmentation), scores over the head's labels in its order.
    assert_eq!(lines.len(), SENTENCES.len());
    for (line, (id, text, _, _)) in lines.iter().zip(SENTENCES) {
        let u: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(u["id"], *id);
        assert_eq!(u["text"], *text);
        assert_eq!(u["scores"].as_object().unwrap().len(), 3);
        // Key order as written (a parsed JSON object would sort its keys).
        let at = |key: &str| line.find(&format!("\"{key}\":")).unwrap();
        assert!(line.contains("\"scores\":{\"pos\":"), "{line}");
        assert!(at("pos") < at("neu") && at("neu") < at("neg"), "{line}");
        assert!(["pos", "neu", "neg"].contains(&u["label"].as_str().unwrap()));
    }
    let o = run(
        &[
            "eval",
            "--gold",
            &three,
            "--gold-format",
            "checkthat",
            "--model",
            &model,
            "--head",
            head.to_str().unwrap(),
            "--model",
            "majority",
            "--format",
            "json",
        ],
        &cache,
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let per_class = v["systems"][0]["metrics"]["per_class"].as_object().unwrap();
    let mut names: Vec<&String> = per_class.keys().collect();
    names.sort();
    assert_eq!(names, ["neg", "neu", "pos"]);
    assert_eq!(
        v["systems"][0]["metrics"]["confusion"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // The majority class of the made-up gold is neu (7 of 16).
    assert_eq!(v["systems"][1]["name"], "majority");
    assert_eq!(
        v["systems"][1]["metrics"]["per_class"]["neu"]["predicted"],
        16
    );
    assert_eq!(v["gold_label_counts"]["neu"], 7);
}

#[test]
fn map_turns_stance_predictions_into_a_submission_the_scorer_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let (two, _, _) = write_data(tmp.path());
    let map = "report=OBJ,quotation=OBJ,endorsement=SUBJ,opinion=SUBJ";
    let gold = std::fs::read_to_string(&two).unwrap();
    // Unmapped, the stance labels are refused by the lab's rules.
    let o = mawqif(&["classify", "--model", "cues", "--input", "checkthat", &two]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(scorer_accepts(&stdout(&o), &gold)
        .unwrap_err()
        .contains("Wrong labels"));
    // Mapped (inline, or from a file), they pass; merged scores are summed.
    let map_file = tmp.path().join("map.txt");
    std::fs::write(&map_file, map.replace(',', "\n") + "\n").unwrap();
    for spec in [map, map_file.to_str().unwrap()] {
        let o = mawqif(&[
            "classify",
            "--model",
            "cues",
            "--input",
            "checkthat",
            "--map",
            spec,
            &two,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        scorer_accepts(&stdout(&o), &gold).unwrap();
        assert_eq!(stdout(&o).lines().count(), SENTENCES.len() + 1);
    }
    let o = mawqif(&[
        "classify",
        "--model",
        "cues",
        "--input",
        "checkthat",
        "--map",
        map,
        "--format",
        "jsonl",
        &two,
    ]);
    for line in stdout(&o).lines() {
        let u: serde_json::Value = serde_json::from_str(line).unwrap();
        let scores = u["scores"].as_object().unwrap();
        assert_eq!(scores.keys().collect::<Vec<_>>(), ["OBJ", "SUBJ"]);
        assert_eq!(scores[u["label"].as_str().unwrap()], 1.0);
    }
    // eval maps the cue baseline too, and scores the mapped predictions.
    let o = mawqif(&[
        "eval",
        "--gold",
        &two,
        "--gold-format",
        "checkthat",
        "--model",
        "cues",
        "--map",
        map,
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["systems"][0]["matched"], SENTENCES.len());
    assert!(v["cues_macro_f1"].is_number());
    let pred = tmp.path().join("cues.tsv");
    let o = mawqif(&[
        "classify",
        "--model",
        "cues",
        "--input",
        "checkthat",
        "--map",
        map,
        &two,
    ]);
    std::fs::write(&pred, &o.stdout).unwrap();
    close(
        v["systems"][0]["metrics"]["macro_f1"]["value"]
            .as_f64()
            .unwrap(),
        scorer_macro_f1(&stdout(&o), &gold),
    );
    // A bad map is a clear error.
    let o = mawqif(&["classify", "--model", "cues", "--map", "report", &two]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("FROM=TO"), "{}", stderr(&o));
}
