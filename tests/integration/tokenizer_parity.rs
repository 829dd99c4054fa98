//! mawqif's compact unigram model gives the same ids as `tokenizers`' own
//! Unigram on every sentence we have (e5's 250k-piece XLM-R vocabulary).

use mawqif::tokenize::SentenceTokenizer;

#[test]
fn compact_unigram_matches_tokenizers_on_all_sentences() {
    let Some(dir) = crate::common::e5_model() else {
        return;
    };
    let ours = SentenceTokenizer::from_model_dir(&dir, None, 100_000).unwrap();
    let reference = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let mut texts: Vec<String> = Vec::new();
    let mut files = vec![std::path::PathBuf::from("eval/fixtures/article.txt")];
    for e in std::fs::read_dir("eval/train/texts").unwrap() {
        files.push(e.unwrap().path());
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        texts.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| format!("query: {l}")),
        );
    }
    // The parity strings: marks, tatweel, digits, presentation forms, emoji…
    let parity: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("tests/fixtures/e5_parity.json").unwrap())
            .unwrap();
    for case in parity["cases"].as_array().unwrap() {
        if let Some(t) = case["text"].as_str() {
            texts.push(format!("query: {t}"));
        }
    }
    texts.extend(
        [
            "",
            " ",
            "<s> </s>",
            "𝔸𝔹 \u{200d}\u{200c} ــــ",
            "x".repeat(300).as_str(),
        ]
        .map(String::from),
    );
    assert!(texts.len() > 500, "only {} texts", texts.len());
    let got = ours.encode(&texts).unwrap();
    for (t, g) in texts.iter().zip(&got) {
        let want = reference.encode(t.as_str(), true).unwrap();
        assert_eq!(g.ids, want.get_ids(), "{t}");
    }
}
