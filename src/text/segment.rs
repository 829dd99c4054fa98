//! Stage 1: cut an Arabic news text into labelable units.
//!
//! Contract: [`Segmenter::segment`] takes the whole source text and returns the
//! units in reading order. Each unit's `text` equals `source[start..end]`
//! (byte offsets into the source), trimmed of whitespace and invisible marks.
//! Headlines and section titles (lines without final punctuation) are units.
//! Non-sentences (outlet lines such as `ليبيا 24`, bylines, dates alone,
//! separators, lines without an Arabic letter) are dropped.

use serde::{Deserialize, Serialize};

use super::arabic::is_arabic_letter;

/// One labelable unit with its byte span in the source text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Position among the units of its text, from 0.
    pub index: usize,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// Rule-based sentence segmenter for Arabic news.
#[derive(Debug, Clone, Default)]
pub struct Segmenter {
    _private: (),
}

const SENTENCE_END: [char; 4] = ['.', '!', '?', '؟'];
const WEEKDAYS_AND_MONTHS: &[&str] = &[
    "السبت",
    "الأحد",
    "الاثنين",
    "الإثنين",
    "الثلاثاء",
    "الأربعاء",
    "الخميس",
    "الجمعة",
    "يناير",
    "فبراير",
    "مارس",
    "أبريل",
    "إبريل",
    "مايو",
    "يونيو",
    "يوليو",
    "أغسطس",
    "سبتمبر",
    "أكتوبر",
    "نوفمبر",
    "ديسمبر",
    "كانون",
    "شباط",
    "آذار",
    "نيسان",
    "أيار",
    "حزيران",
    "تموز",
    "آب",
    "أيلول",
    "تشرين",
    "الأول",
    "الثاني",
    "م",
    "هـ",
    "الموافق",
    "/",
    "-",
];
const BYLINE_STARTS: &[&str] = &["بقلم", "كتب", "كتبت", "إعداد", "تحرير", "المصدر"];

impl Segmenter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Split `source` into units; see the module docs for the contract.
    pub fn segment(&self, source: &str) -> Vec<Segment> {
        let mut segments = Vec::new();
        let mut line_start = 0;
        for line in source.split_inclusive('\n') {
            let (offset, trimmed) = trim_span(line);
            if !trimmed.is_empty() && !is_non_sentence_line(trimmed) {
                let base = line_start + offset;
                for (s, e) in split_line(trimmed) {
                    let (o, unit) = trim_span(&trimmed[s..e]);
                    if unit.is_empty() || !has_arabic_letter(unit) {
                        continue;
                    }
                    let start = base + s + o;
                    segments.push(Segment {
                        index: segments.len(),
                        start,
                        end: start + unit.len(),
                        text: unit.to_string(),
                    });
                }
            }
            line_start += line.len();
        }
        segments
    }
}

/// Whitespace plus the invisible marks that editors leave at line edges
/// (BOM, zero-width characters, direction marks and embeddings).
fn is_edge_junk(c: char) -> bool {
    c.is_whitespace()
        || matches!(c, '\u{feff}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Trim edge junk and return (offset of the kept part, kept part).
fn trim_span(s: &str) -> (usize, &str) {
    let kept = s.trim_start_matches(is_edge_junk);
    let offset = s.len() - kept.len();
    (offset, kept.trim_end_matches(is_edge_junk))
}

fn has_arabic_letter(s: &str) -> bool {
    s.chars().any(is_arabic_letter)
}

/// Lines that carry no claim: outlet names with a number (`ليبيا 24`),
/// bylines, dates alone, separators.
fn is_non_sentence_line(line: &str) -> bool {
    if !has_arabic_letter(line) {
        return true;
    }
    if line.ends_with(SENTENCE_END) {
        return false;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    // A number has a digit: a lone "..." or "،" between words is not one
    // (two-word headlines with "..." between them were dropped as outlet
    // lines).
    let is_number = |w: &str| {
        w.chars().any(char::is_numeric) && w.chars().all(|c| c.is_numeric() || c == '.' || c == ',')
    };
    // An outlet name with a number: "ليبيا 24", "فرانس 24", "عربي 21".
    if words.len() <= 3 && words.iter().any(|w| is_number(w)) && words.len() >= 2 {
        let letters_words = words.iter().filter(|w| !is_number(w)).count();
        if letters_words <= 2 {
            return true;
        }
    }
    if let Some(first) = words.first() {
        let first = first.trim_end_matches([':', '،']);
        if words.len() <= 5 && BYLINE_STARTS.contains(&first) && line.contains(':') {
            return true;
        }
    }
    // A date alone: only numbers, weekday and month names.
    words.iter().any(|w| is_number(w))
        && words.iter().all(|w| {
            let w = w.trim_matches(|c: char| c == '،' || c == ',');
            is_number(w) || WEEKDAYS_AND_MONTHS.contains(&w)
        })
}

/// Byte ranges of the sentences of one trimmed line.
fn split_line(line: &str) -> Vec<(usize, usize)> {
    split_line_with(line, true).unwrap_or_else(|| {
        // Unbalanced quotes: rather than swallow the rest of the line into one
        // unit, split as if there were no quotes.
        split_line_with(line, false).unwrap_or_else(|| vec![(0, line.len())])
    })
}

/// Returns None when `respect_quotes` is set and a quote is left open.
fn split_line_with(line: &str, respect_quotes: bool) -> Option<Vec<(usize, usize)>> {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut ranges = Vec::new();
    let mut unit_start = 0;
    let mut guillemets = 0usize; // « »
    let mut curly = 0usize; // “ ”
    let mut in_straight = false; // " "
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        match c {
            '«' => guillemets += 1,
            '»' => guillemets = guillemets.saturating_sub(1),
            '“' => curly += 1,
            '”' => curly = curly.saturating_sub(1),
            '"' => in_straight = !in_straight,
            _ => {}
        }
        let quoted = respect_quotes && (guillemets > 0 || curly > 0 || in_straight);
        if SENTENCE_END.contains(&c) && !quoted {
            // A run of terminators ("؟!", "!!", "...") is decided once, as a
            // whole: it ends the sentence if any of its marks is a boundary,
            // and then goes into the unit. Scanning the run once keeps a long
            // line of dots linear (checking each mark up to the run's end was
            // quadratic). Terminators are not quotes, so `quoted` holds for
            // the whole run.
            let mut j = i + 1;
            while j < chars.len() && SENTENCE_END.contains(&chars[j].1) {
                j += 1;
            }
            let next = chars.get(j).map(|&(_, ch)| ch);
            if (i..j).any(|k| is_boundary(&chars, k, next)) && !continues_with_dots(&chars, j) {
                let end = chars.get(j).map_or(line.len(), |&(p, _)| p);
                ranges.push((unit_start, end));
                unit_start = end;
            }
            i = j;
            continue;
        }
        i += 1;
    }
    if respect_quotes && (guillemets > 0 || curly > 0 || in_straight) {
        return None;
    }
    if unit_start < line.len() {
        ranges.push((unit_start, line.len()));
    }
    Some(ranges)
}

/// Headlines chain their parts with dots after a mark («...؟ .. بعد ...»):
/// a run of terminators followed, past spaces, by more dots does not end the
/// unit, or the second part would start with "..".
fn continues_with_dots(chars: &[(usize, char)], from: usize) -> bool {
    chars[from..]
        .iter()
        .map(|&(_, c)| c)
        .find(|c| !c.is_whitespace())
        .is_some_and(|c| c == '.' || c == '…')
}

/// Does the terminator at `chars[i]` end a sentence? `next` is the
/// character after its run of terminators (None at the end of the line).
fn is_boundary(chars: &[(usize, char)], i: usize, next: Option<char>) -> bool {
    let c = chars[i].1;
    let prev = i.checked_sub(1).map(|k| chars[k].1);
    if c == '.' {
        // An ellipsis written as dots: never a boundary mid-line.
        if prev == Some('.') || chars.get(i + 1).map(|&(_, ch)| ch) == Some('.') {
            return next.is_none();
        }
        // A decimal: 5.6, 27.25%.
        if prev.is_some_and(|p| p.is_numeric())
            && chars.get(i + 1).is_some_and(|&(_, n)| n.is_numeric())
        {
            return false;
        }
        // An abbreviation: a lone letter before the dot (د. م. أ.).
        if is_lone_letter_before(chars, i) {
            return false;
        }
    }
    match next {
        None => true,
        Some(n) => n.is_whitespace(),
    }
}

fn is_lone_letter_before(chars: &[(usize, char)], i: usize) -> bool {
    let Some(k) = i.checked_sub(1) else {
        return false;
    };
    if !chars[k].1.is_alphabetic() {
        return false;
    }
    match k.checked_sub(1) {
        None => true,
        Some(b) => {
            let before = chars[b].1;
            before.is_whitespace() || before == '(' || before == '.'
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<String> {
        Segmenter::new()
            .segment(s)
            .into_iter()
            .map(|u| u.text)
            .collect()
    }

    #[test]
    fn splits_at_terminators_and_lines() {
        assert_eq!(
            texts("عنوان الخبر\nوصل الوفد. وقال الوزير كلاما؟ نعم!"),
            vec!["عنوان الخبر", "وصل الوفد.", "وقال الوزير كلاما؟", "نعم!"]
        );
    }

    #[test]
    fn never_splits_inside_quotes() {
        assert_eq!(
            texts("وقال: «لن نتراجع. أبدا». ثم غادر القاعة."),
            vec!["وقال: «لن نتراجع. أبدا».", "ثم غادر القاعة."]
        );
        assert_eq!(
            texts("قال “نعم. لا” ومضى. وانتهى \"هنا. هناك\" الأمر."),
            vec!["قال “نعم. لا” ومضى.", "وانتهى \"هنا. هناك\" الأمر."]
        );
    }

    #[test]
    fn keeps_decimals_abbreviations_ellipses_and_commas() {
        assert_eq!(
            texts("ارتفع المؤشر 5.6 نقطة إلى 27.25% اليوم، وقال د. أحمد إن الوضع جيد... ثم صمت… ومضى."),
            vec!["ارتفع المؤشر 5.6 نقطة إلى 27.25% اليوم، وقال د. أحمد إن الوضع جيد... ثم صمت… ومضى."]
        );
    }

    #[test]
    fn drops_non_sentences() {
        assert_eq!(
            texts("ليبيا 24\n⸻\n***\n---\nبقلم: محمد علي\nالأحد 12 مايو 2024\nخبر مهم\n2024"),
            vec!["خبر مهم"]
        );
    }

    #[test]
    fn keeps_short_headlines_with_dots_or_commas_between_words() {
        // Punctuation alone is not a number: these are headlines, not outlet
        // lines or dates.
        assert_eq!(
            texts("الميناء ... غدًا\nغزة ، الآن"),
            vec!["الميناء ... غدًا", "غزة ، الآن"]
        );
    }

    #[test]
    fn dots_after_a_mark_continue_the_headline() {
        assert_eq!(
            texts("هل تعود الحركة إلى الميناء؟ .. بعد تحسّن الطقس\nانتهى الاجتماع. .. ثم عاد الوفد."),
            vec![
                "هل تعود الحركة إلى الميناء؟ .. بعد تحسّن الطقس",
                "انتهى الاجتماع. .. ثم عاد الوفد."
            ]
        );
        // Without the dots, the mark still ends the sentence.
        assert_eq!(
            texts("هل تعود الحركة؟ بعد تحسّن الطقس"),
            vec!["هل تعود الحركة؟", "بعد تحسّن الطقس"]
        );
    }

    #[test]
    fn offsets_point_into_the_source() {
        let src = "\u{feff}  عنوان  \r\nجملة أولى. جملة ثانية.\n";
        let units = Segmenter::new().segment(src);
        assert_eq!(units.len(), 3);
        for (k, u) in units.iter().enumerate() {
            assert_eq!(&src[u.start..u.end], u.text);
            assert_eq!(u.index, k);
        }
    }

    #[test]
    fn unbalanced_quote_does_not_swallow_the_line() {
        assert_eq!(
            texts("قال: «لن نتراجع. ثم غادر."),
            vec!["قال: «لن نتراجع.", "ثم غادر."]
        );
    }

    #[test]
    fn a_long_run_of_dots_is_segmented_in_linear_time() {
        // Each dot of a run used to rescan the run to its end: a line of a
        // million dots took minutes. The watchdog is a hang detector, 1000x
        // above what the linear scan needs.
        let line = format!("قال{}ثم مضى. وانتهى.", ".".repeat(1 << 20));
        let (send, receive) = std::sync::mpsc::channel();
        let worker = {
            let line = line.clone();
            std::thread::spawn(move || send.send(texts(&line)))
        };
        let units = receive
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("segmenting a 1 MB run of dots did not finish within 60 s");
        worker.join().unwrap().unwrap();
        assert_eq!(
            units,
            vec![
                line[..line.len() - "وانتهى.".len() - 1].to_string(),
                "وانتهى.".to_string()
            ]
        );
    }

    #[test]
    fn terminator_runs_stay_together() {
        assert_eq!(texts("هل هذا معقول؟! لا."), vec!["هل هذا معقول؟!", "لا."]);
    }
}
