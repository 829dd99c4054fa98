//! Web spellings of Arabic: the variants that real news pages use next to
//! the careful spelling of the training texts. `--web-spelling` rewrites a
//! share of the fine-tuning units with them. On the dev split the default
//! head lost 0.4–0.7 macro-F1 points on each variant; training with 30% of
//! units respelled did not shrink those losses, so shipped heads do not use
//! it (`eval/train/README.md`).

use super::arabic::{is_arabic_letter, is_mark};
use crate::rng::SplitMix64;

/// One way web text departs from careful spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpellingVariant {
    /// أ إ آ written as a bare ا.
    BareAlef,
    /// A word-final ي written ى (Egyptian and Sudanese usage).
    FinalYaAsAlefMaqsura,
    /// A word-final ة written ه.
    FinalTaMarbutaAsHa,
    /// Western digits written as Arabic-Indic ones (٠–٩).
    ArabicIndicDigits,
    /// ، ؛ ؟ written with the Latin , ; ?
    LatinPunctuation,
}

impl SpellingVariant {
    pub const ALL: [SpellingVariant; 5] = [
        SpellingVariant::BareAlef,
        SpellingVariant::FinalYaAsAlefMaqsura,
        SpellingVariant::FinalTaMarbutaAsHa,
        SpellingVariant::ArabicIndicDigits,
        SpellingVariant::LatinPunctuation,
    ];

    /// `text` respelled this way.
    pub fn apply(self, text: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        // Marks (a case ending, a shadda) do not end the word: look past them.
        let word_final = |i: usize| {
            chars[i + 1..]
                .iter()
                .find(|&&next| !is_mark(next))
                .is_none_or(|&next| !is_arabic_letter(next))
        };
        chars
            .iter()
            .enumerate()
            .map(|(i, &c)| match (self, c) {
                (SpellingVariant::BareAlef, 'أ' | 'إ' | 'آ') => 'ا',
                (SpellingVariant::FinalYaAsAlefMaqsura, 'ي') if word_final(i) => 'ى',
                (SpellingVariant::FinalTaMarbutaAsHa, 'ة') if word_final(i) => 'ه',
                (SpellingVariant::ArabicIndicDigits, '0'..='9') => {
                    char::from_u32(0x0660 + (c as u32 - '0' as u32)).unwrap_or(c)
                }
                (SpellingVariant::LatinPunctuation, '،') => ',',
                (SpellingVariant::LatinPunctuation, '؛') => ';',
                (SpellingVariant::LatinPunctuation, '؟') => '?',
                _ => c,
            })
            .collect()
    }
}

/// `text` respelled with a random non-empty subset of the variants, each
/// picked with probability one half.
pub fn web_spelling(text: &str, rng: &mut SplitMix64) -> String {
    let mut chosen: Vec<SpellingVariant> = SpellingVariant::ALL
        .into_iter()
        .filter(|_| rng.unit() < 0.5)
        .collect();
    if chosen.is_empty() {
        chosen.push(SpellingVariant::ALL[rng.below(SpellingVariant::ALL.len())]);
    }
    chosen
        .into_iter()
        .fold(text.to_string(), |respelled, variant| {
            variant.apply(&respelled)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_changes_only_its_letters() {
        let text = "أعلنت الوزارة في 2024، إلى جانب آخرين؟ أيضا الذي قال؛";
        let expected = [
            (
                SpellingVariant::BareAlef,
                "اعلنت الوزارة في 2024، الى جانب اخرين؟ ايضا الذي قال؛",
            ),
            (
                SpellingVariant::FinalYaAsAlefMaqsura,
                "أعلنت الوزارة فى 2024، إلى جانب آخرين؟ أيضا الذى قال؛",
            ),
            (
                SpellingVariant::FinalTaMarbutaAsHa,
                "أعلنت الوزاره في 2024، إلى جانب آخرين؟ أيضا الذي قال؛",
            ),
            (
                SpellingVariant::ArabicIndicDigits,
                "أعلنت الوزارة في ٢٠٢٤، إلى جانب آخرين؟ أيضا الذي قال؛",
            ),
            (
                SpellingVariant::LatinPunctuation,
                "أعلنت الوزارة في 2024, إلى جانب آخرين? أيضا الذي قال;",
            ),
        ];
        for (variant, respelled) in expected {
            assert_eq!(variant.apply(text), respelled, "{variant:?}");
        }
    }

    #[test]
    fn marks_after_the_last_letter_do_not_hide_the_word_end() {
        assert_eq!(
            SpellingVariant::FinalTaMarbutaAsHa.apply("مدرسةٌ كبيرةً."),
            "مدرسهٌ كبيرهً."
        );
        assert_eq!(
            SpellingVariant::FinalYaAsAlefMaqsura.apply("يُعطي يَدَيْهِ"),
            "يُعطى يَدَيْهِ"
        );
    }

    #[test]
    fn web_spelling_is_seeded_and_always_changes_something_it_can() {
        let text = "أكدت الوزارة في بيانها، الذي صدر 2025، أن الخطة ماضية؟";
        let a = web_spelling(text, &mut SplitMix64::new(7));
        let b = web_spelling(text, &mut SplitMix64::new(7));
        assert_eq!(a, b);
        for seed in 0..50 {
            assert_ne!(web_spelling(text, &mut SplitMix64::new(seed)), text);
        }
    }
}
