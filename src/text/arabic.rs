//! Arabic character classes shared by the segmenter, preprocessing and the
//! cue rules, so that all three agree on what a letter and a mark are.

/// Letters of the Arabic script (base block, extended letters and the
/// presentation forms that scraped text still contains).
pub fn is_arabic_letter(c: char) -> bool {
    matches!(c,
        '\u{0621}'..='\u{063A}' | '\u{0641}'..='\u{064A}' | '\u{0671}'..='\u{06D3}'
        | '\u{06FA}'..='\u{06FF}' | '\u{FB50}'..='\u{FDFF}' | '\u{FE70}'..='\u{FEFC}')
}

/// Tatweel and the Arabic harakat, tanwin, shadda, sukun and superscript alef.
pub fn is_mark(c: char) -> bool {
    matches!(c, '\u{0640}' | '\u{064B}'..='\u{0652}' | '\u{0670}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_and_marks_are_disjoint() {
        assert!(is_arabic_letter('ب') && !is_mark('ب'));
        assert!(is_mark('\u{064E}') && !is_arabic_letter('\u{064E}'));
        assert!(is_mark('ـ') && !is_arabic_letter('ـ'));
        assert!(!is_arabic_letter('a') && !is_arabic_letter('٣'));
    }
}
