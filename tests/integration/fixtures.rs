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
        assert_ne!(g.alt.as_ref(), Some(&g.label));
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
    match std::fs::read("../shared/seed/article.txt") {
        Ok(seed) => assert_eq!(
            std::fs::read("eval/fixtures/article.txt").unwrap(),
            seed,
            "eval/fixtures/article.txt must be the seed article"
        ),
        Err(e) => eprintln!("SKIPPED seed comparison: ../shared/seed/article.txt: {e}"),
    }
}

/// Where each hand-marked unit of `units` (one per line, exact substrings
/// in reading order) lies in `text`.
fn hand_spans(text: &str, units: &str) -> Vec<(usize, usize)> {
    let mut at = 0;
    units
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|u| {
            let start = at
                + text[at..]
                    .find(u)
                    .unwrap_or_else(|| panic!("unit not in text: {u}"));
            at = start + u.len();
            (start, at)
        })
        .collect()
}

/// The segmenter against boundaries marked by hand, blind to it
/// (eval/fixtures/article.units.txt): independent segmentation gold.
#[test]
fn segmenter_matches_hand_marked_units_of_the_article() {
    let text = std::fs::read_to_string("eval/fixtures/article.txt").unwrap();
    let units = std::fs::read_to_string("eval/fixtures/article.units.txt").unwrap();
    let gold = hand_spans(&text, &units);
    assert_eq!(gold.len(), 49);
    let predicted = Segmenter::new().segment(&text);
    let score = mawqif::eval::metrics::segmentation_score(&gold, &predicted);
    assert_eq!(score.exact_units, 49, "{score:?}");
    assert_eq!(score.boundary_f1, 1.0, "{score:?}");
    // The score can fail: fusing two units loses a boundary pair.
    let mut fused = predicted.clone();
    let second = fused.remove(6);
    fused[5].end = second.end;
    let worse = mawqif::eval::metrics::segmentation_score(&gold, &fused);
    assert!(
        worse.boundary_f1 < 1.0 && worse.exact_units == 47,
        "{worse:?}"
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
        texts >= 200 && total >= 6000,
        "{texts} texts, {total} sentences"
    );
}
