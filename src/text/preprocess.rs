//! Stage 2: turn a unit's text into the string the encoder expects.
//!
//! Contract: [`Preprocessor::apply`] is a pure function of the text; it never
//! changes the unit's span (offsets always refer to the source), only what the
//! tokenizer sees. Model-specific rules come from the model's profile.

use serde::{Deserialize, Serialize};

use super::arabic::is_mark;

/// Text clean-up before the tokenizer: what a model was pre-trained with,
/// or what makes it robust to how real pages spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Preprocessing {
    /// Feed the text as written (the tokenizer's own normalizer does the rest).
    #[default]
    None,
    /// Remove tatweel (U+0640) and Arabic diacritics, which some Arabic BERTs
    /// were pre-trained without and which news pages use unevenly.
    StripMarks,
    /// What the `arabert` package's `ArabertPreprocessor` does for
    /// `bert-base-arabertv02` (see [`arabert_v02`]).
    ArabertV02,
}

#[derive(Debug, Clone, Default)]
pub struct Preprocessor {
    pub preprocessing: Preprocessing,
    /// Prepended to every sentence, e.g. `query: ` for e5.
    pub prefix: String,
}

impl Preprocessor {
    pub fn new(preprocessing: Preprocessing, prefix: impl Into<String>) -> Self {
        Self {
            preprocessing,
            prefix: prefix.into(),
        }
    }

    pub fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + text.len());
        out.push_str(&self.prefix);
        match self.preprocessing {
            Preprocessing::None => out.push_str(text),
            Preprocessing::StripMarks => out.extend(text.chars().filter(|&c| !is_mark(c))),
            Preprocessing::ArabertV02 => out.push_str(&arabert_v02(text)),
        }
        out
    }
}

/// Python's `str.isspace`: Unicode White_Space plus the ASCII separators
/// U+001C..U+001F.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The regexes of `arabert.preprocess`, compiled once. They run in fancy-regex,
/// a backtracking engine with Python-like semantics (lookahead, leftmost-first).
struct ArabertRegexes {
    urls: Vec<fancy_regex::Regex>,
    emails: Vec<fancy_regex::Regex>,
    mention: fancy_regex::Regex,
    html_tag: fancy_regex::Regex,
    digit: fancy_regex::Regex,
    digits_then_letters: fancy_regex::Regex,
    letters_then_digits: fancy_regex::Regex,
}

fn arabert_regexes() -> &'static ArabertRegexes {
    static RE: std::sync::OnceLock<ArabertRegexes> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        // These patterns are constants; a failure to compile is a programming error
        // caught by the parity test, so fall back to a never-matching pattern.
        let re = |p: &str| {
            fancy_regex::Regex::new(p).unwrap_or_else(|_| {
                fancy_regex::Regex::new(r"[^\s\S]").unwrap_or_else(|_| unreachable!())
            })
        };
        ArabertRegexes {
            urls: [
                r"(http(s)?:\/\/.)?(www\.)?[-a-zA-Z0-9@:%._\+~#=]{2,256}\.[a-z]{2,6}\b([-a-zA-Z0-9@:%_\+.~#?&//=]*)",
                r"@(https?|ftp)://(-\.)?([^\s/?\.#-]+\.?)+(/[^\s]*)?$@iS",
                r"http[s]?://[a-zA-Z0-9_\-./~\?=%&]+",
                r"www[a-zA-Z0-9_\-?=%&/.~]+",
                r"[a-zA-Z]+\.com",
                r"(?=http)[^\s]+",
                r"(?=www)[^\s]+",
                r"://",
            ]
            .iter()
            .map(|p| re(p))
            .collect(),
            emails: [r"[\w-]+@([\w-]+\.)+[\w-]+", r"\S+@\S+"].iter().map(|p| re(p)).collect(),
            mention: re(r"@[\w\d]+"),
            html_tag: re(r"</?[^>]+>"),
            digit: re(r"^\d$"),
            digits_then_letters: re(r"(\d+)([\x{0621}-\x{063A}\x{0641}-\x{064A}\x{0660}-\x{066C}]+)"),
            letters_then_digits: re(r"([\x{0621}-\x{063A}\x{0641}-\x{064A}\x{0660}-\x{066C}]+)(\d+)"),
        }
    })
}

/// Replace every match. fancy-regex's own `replace_all` panics when its
/// backtracking limit is hit; on such a pathological input the step is
/// skipped and the text kept as it was, so preprocessing never panics.
fn replace_all(re: &fancy_regex::Regex, text: &str, with: &str) -> String {
    match re.try_replacen(text, 0, with) {
        Ok(replaced) => replaced.into_owned(),
        Err(_) => text.to_string(),
    }
}

/// The common HTML character references that `html.unescape` resolves;
/// the rarer named ones of HTML5 are left as written.
fn html_unescape(text: &str) -> String {
    const NAMED: [(&str, &str); 8] = [
        ("&amp;", "&"),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&apos;", "'"),
        ("&nbsp;", "\u{a0}"),
        ("&laquo;", "«"),
        ("&raquo;", "»"),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        if let Some((name, value)) = NAMED.iter().find(|(n, _)| rest.starts_with(n)) {
            out.push_str(value);
            rest = &rest[name.len()..];
            continue;
        }
        if let Some(body) = rest.strip_prefix("&#") {
            let (hex, digits) = match body.strip_prefix(['x', 'X']) {
                Some(h) => (true, h),
                None => (false, body),
            };
            let len = digits
                .find(|c: char| {
                    !(if hex {
                        c.is_ascii_hexdigit()
                    } else {
                        c.is_ascii_digit()
                    })
                })
                .unwrap_or(digits.len());
            let code = u32::from_str_radix(&digits[..len], if hex { 16 } else { 10 }).ok();
            if let (Some(ch), true) = (code.and_then(char::from_u32), len > 0) {
                out.push(ch);
                let consumed = 2 + usize::from(hex) + len;
                let after = &rest[consumed..];
                rest = after.strip_prefix(';').unwrap_or(after);
                continue;
            }
        }
        out.push('&');
        rest = &rest[1..];
    }
    out.push_str(rest);
    out
}

/// Characters `arabert` keeps for its second-generation models; the rest become spaces.
fn arabert_keeps(c: char) -> bool {
    matches!(c,
        '0'..='9' | '\u{0621}'..='\u{063A}' | '\u{0640}'..='\u{066C}' | '\u{0671}'..='\u{0674}'
        | 'a'..='z' | 'A'..='Z')
        || "[]!\"#$%'()*+,.:;-<=·>?@\\^_ـ`{|}~—٪’،؟୍“؛”ۚ»«–…‘".contains(c)
        || py_isspace(c)
}

/// Port of `ArabertPreprocessor("bert-base-arabertv02").preprocess`
/// (arabert 1.0.1): unescape HTML, strip tashkeel and tatweel, replace URLs,
/// e-mails and mentions with placeholders, drop HTML tags, map Arabic-Indic
/// digits, shorten character runs, space out everything that is not an
/// Arabic letter, Latin letter or digit, turn `/` into `-`, drop unknown
/// characters and collapse whitespace. `tests/arabert_parity.rs` checks it
/// against the Python package byte for byte.
pub fn arabert_v02(text: &str) -> String {
    let re = arabert_regexes();
    let mut t = html_unescape(text);
    t.retain(|c| !matches!(c, '\u{064B}'..='\u{0652}' | '\u{0640}'));
    for r in &re.urls {
        t = replace_all(r, &t, " [رابط] ");
    }
    for r in &re.emails {
        t = replace_all(r, &t, " [بريد] ");
    }
    t = replace_all(&re.mention, &t, " [مستخدم] ");
    t = t.replace("<br />", " ");
    t = replace_all(&re.html_tag, &t, " ");
    t = t
        .chars()
        .map(|c| match c {
            '\u{0660}'..='\u{0669}' => char::from(b'0' + (c as u32 - 0x0660) as u8),
            _ => c,
        })
        .collect();
    // Runs of three or more of the same non-digit character shrink to two.
    let is_digit = |c: char| {
        re.digit
            .is_match(c.encode_utf8(&mut [0u8; 4]))
            .unwrap_or(false)
    };
    let chars: Vec<char> = t.chars().collect();
    let mut shortened = String::with_capacity(t.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut j = i + 1;
        while j < chars.len() && chars[j] == c {
            j += 1;
        }
        let run = j - i;
        let keep = if run >= 3 && !is_digit(c) { 2 } else { run };
        shortened.extend(std::iter::repeat_n(c, keep));
        i = j;
    }
    let mut spaced = String::with_capacity(shortened.len() * 2);
    for c in shortened.chars() {
        let kept = matches!(c,
            '0'..='9' | '\u{0621}'..='\u{063A}' | '\u{0641}'..='\u{064A}' | '\u{0660}'..='\u{0669}'
            | 'a'..='z' | 'A'..='Z' | '[' | ']');
        if kept {
            spaced.push(c);
        } else {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        }
    }
    let t = replace_all(&re.digits_then_letters, &spaced, " $1 $2 ");
    let t = replace_all(&re.letters_then_digits, &t, " $1 $2 ");
    let t: String = t
        .replace('/', "-")
        .chars()
        .map(|c| if arabert_keeps(c) { c } else { ' ' })
        .filter(|&c| c != '\u{fe0f}')
        .collect();
    t.split(py_isspace)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_marks() {
        let p = Preprocessor::new(Preprocessing::None, "query: ");
        assert_eq!(p.apply("قالَ"), "query: قالَ");
        let p = Preprocessor::new(Preprocessing::StripMarks, "");
        assert_eq!(p.apply("قـــالَ الرّئيسُ"), "قال الرئيس");
    }

    #[test]
    fn a_regex_past_its_backtracking_limit_keeps_the_text() {
        // Lookaheads make fancy-regex backtrack itself; two ways to take
        // each letter before a missing `b` exceed its limit on 40 letters,
        // where its own replace_all panicked.
        let re = fancy_regex::Regex::new(r"(?:(?=a)a|(?=a)aa)+b").unwrap();
        let text = "a".repeat(40);
        assert!(re.is_match(&text).is_err(), "the limit was not reached");
        assert_eq!(replace_all(&re, &text, "x"), text);
        assert_eq!(replace_all(&re, "aab", "x"), "x");
    }
}
