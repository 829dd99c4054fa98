//! Integrity of the gold fixtures and of the training data.

use std::collections::HashSet;

use mawqif::eval::{read_gold, GoldFormat};
use mawqif::Segmenter;

fn check(gold_path: &str, text_path: &str) -> usize {
    let text = std::fs::read_to_string(text_path).unwrap();
    let gold = read_gold(std::path::Path::new(gold_path), GoldFormat::Jsonl).unwrap();
    let mut ids = HashSet::new();
    for g in &gold {
        assert!(
            ids.insert(g.id.clone()),
            "{gold_path}: duplicate id {}",
            g.id
        );
        let (s, e) = g.span().expect("gold has spans");
        assert_eq!(
            text.get(s..e),
            Some(g.text.as_str()),
            "{gold_path}: {} is not the source slice",
            g.id
        );
        assert_ne!(g.alt, Some(g.label));
    }
    // Gold units are exactly the segmenter's units.
    let units: Vec<(usize, usize)> = Segmenter::new()
        .segment(&text)
        .iter()
        .map(|u| (u.start, u.end))
        .collect();
    let spans: Vec<(usize, usize)> = gold.iter().filter_map(|g| g.span()).collect();
    assert_eq!(units, spans, "{gold_path}: segmentation differs from gold");
    gold.len()
}

#[test]
fn article_fixture_is_consistent() {
    assert_eq!(
        check(
            "eval/fixtures/article.gold.jsonl",
            "eval/fixtures/article.txt"
        ),
        49
    );
    assert_eq!(
        std::fs::read("eval/fixtures/article.txt").unwrap(),
        std::fs::read("../shared/seed/article.txt")
            .unwrap_or_else(|_| std::fs::read("eval/fixtures/article.txt").unwrap()),
        "eval/fixtures/article.txt must be the seed article"
    );
}

#[test]
fn training_data_is_consistent_and_disjoint_from_the_fixtures() {
    let fixture: HashSet<String> = read_gold(
        std::path::Path::new("eval/fixtures/article.gold.jsonl"),
        GoldFormat::Jsonl,
    )
    .unwrap()
    .into_iter()
    .map(|g| g.text)
    .collect();
    let mut total = 0;
    let mut texts = 0;
    for entry in std::fs::read_dir("eval/train/gold").unwrap() {
        let p = entry.unwrap().path();
        let stem = p
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".gold.jsonl")
            .to_string();
        let n = check(p.to_str().unwrap(), &format!("eval/train/texts/{stem}.txt"));
        total += n;
        texts += 1;
        for g in read_gold(&p, GoldFormat::Jsonl).unwrap() {
            assert!(
                !fixture.contains(&g.text),
                "{stem}: training sentence copied from the fixture: {}",
                g.text
            );
        }
    }
    assert!(
        texts >= 40 && total >= 1200,
        "{texts} texts, {total} sentences"
    );
}
