//! Stage 2: turn a unit's text into the string the encoder expects.
//!
//! Contract: [`Preprocessor::apply`] is a pure function of the text; it never
//! changes the unit's span (offsets always refer to the source), only what the
//! tokenizer sees. Model-specific rules come from the model's profile.

use serde::{Deserialize, Serialize};

/// Text clean-up a model was pre-trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Preprocessing {
    /// Feed the text as written (the tokenizer's own normalizer does the rest).
    #[default]
    None,
    /// Remove tatweel (U+0640) and Arabic diacritics, which some Arabic BERTs
    /// were pre-trained without.
    StripMarks,
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
        }
        out
    }
}

/// Tatweel and the Arabic harakat, tanwin, shadda, sukun and superscript alef.
fn is_mark(c: char) -> bool {
    matches!(c, '\u{0640}' | '\u{064B}'..='\u{0652}' | '\u{0670}')
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
}
