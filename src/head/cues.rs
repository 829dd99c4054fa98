//! A transparent rule baseline over Arabic cue words, and the cue features a
//! head may read next to the encoder vector.
//!
//! The rules follow the decision procedure of `LABELS.md` (endorsement, then
//! quotation, then opinion, else report) with word lists anyone can audit.
//! Matching is on normalized words (no diacritics or tatweel, one alef form,
//! common proclitics removed), so `وأشاد` and `أشاد` both hit.

use crate::label::{LabelSet, Scores, Stance};
use crate::text::arabic::{is_arabic_letter, is_mark};

/// Endorsement: approval, support, praise, welcome, congratulation, condolence.
const ENDORSE_STEMS: &[&str] = &[
    "اشاد",
    "يشيد",
    "تشيد",
    "مشيدا",
    "مشيده",
    "اشادته",
    "اشاده",
    "اشادات",
    "رحب",
    "يرحب",
    "ترحب",
    "مرحبا",
    "ترحيب",
    "ترحيبه",
    "ترحيبا",
    "ايد",
    "ايدت",
    "ايده",
    "ايدوا",
    "يويد",
    "تويد",
    "تاييد",
    "تاييده",
    "تاييدها",
    "تاييدا",
    "ثمن",
    "يثمن",
    "ثمنت",
    "مثمنا",
    "بارك",
    "باركت",
    "يبارك",
    "مباركه",
    "هنات",
    "يهني",
    "تهنئه",
    "تهاني",
    "عزى",
    "تعزيه",
    "تعازي",
    "تضامن",
    "تضامنه",
    "تضامنها",
    "شجاع",
    "شجاعه",
    "تاريخي",
    "التاريخي",
    "تاريخيه",
    "مكسب",
    "مكسبا",
    "انجاز",
    "انجازا",
    "بطولي",
    "بطوليه",
    "امتنان",
    "شكر",
    "يشكر",
    "تقدير",
    "تقديره",
];
const ENDORSE_PHRASES: &[&str] = &["الاتجاه الصحيح", "دعمه", "دعمها", "دعمهم"];
/// Verbs and phrases that attribute speech to a source.
const SAY_STEMS: &[&str] = &[
    "قال",
    "قالت",
    "يقول",
    "تقول",
    "اكد",
    "اكدت",
    "يوكد",
    "توكد",
    "موكدا",
    "اوضح",
    "اوضحت",
    "يوضح",
    "اضاف",
    "اضافت",
    "صرح",
    "صرحت",
    "اشار",
    "اشارت",
    "مشيرا",
    "مشيره",
    "شدد",
    "شددت",
    "مشددا",
    "بينت",
    "نقل",
    "نقلت",
    "افاد",
    "افادت",
    "دعا",
    "دعت",
    "يدعو",
    "تدعو",
    "داعيه",
    "داعيا",
    "طالب",
    "طالبت",
    "يطالب",
    "ناشد",
    "ناشدت",
    "كشف",
    "كشفت",
    "لفت",
    "لفتت",
    "نوه",
    "نوهت",
    "اعتبر",
    "اعتبرت",
    "يعتبر",
    "وصف",
    "وصفت",
    "اعلن",
    "اعلنت",
    "يعلن",
    "بيان",
    "البيان",
    "حسب",
    "بحسب",
    "وفق",
    "وفقا",
    "نقلا",
    "تصريح",
    "تصريحات",
    "كلمته",
    "كلمتها",
    "حذر",
    "حذرت",
];
/// Vague collectives and impersonal or modal markers of opinion.
const OPINION_STEMS: &[&str] = &[
    "يرى",
    "ترى",
    "يعتقد",
    "تعتقد",
    "يتوقع",
    "تتوقع",
    "المتوقع",
    "المنتظر",
    "المرتقب",
    "ربما",
    "قد",
    "يجب",
    "ينبغي",
    "لابد",
    "مراقبون",
    "مراقبين",
    "محللون",
    "المحللون",
    "محللين",
    "مويدو",
    "هولاء",
    "يبدو",
    "لعل",
    "يبقى",
    "يفترض",
    "الاجدر",
];
const VAGUE_SOURCES: &[&str] = &[
    "مراقبون",
    "محللون",
    "المحللون",
    "مويدو",
    "هولاء",
    "يرى",
    "ترى",
    "يعتقد",
    "يتوقع",
    "اوساط",
    "متابعون",
];
const NEGATIONS: &[&str] = &[
    "لم", "لا", "لن", "عدم", "رفض", "رفضت", "يرفض", "دون", "ليس", "غير",
];
const QUOTE_MARKS: &[char] = &['«', '»', '“', '”', '"'];

/// Names of the cue features, in the order [`cue_features`] returns them.
pub const CUE_FEATURES: &[&str] = &[
    "endorse_cues",
    "say_cues",
    "opinion_cues",
    "vague_source",
    "quote_marks",
    "colon",
    "question",
    "negation",
    "no_final_punct",
];

/// Arabic text reduced for cue matching.
pub fn normalize_word(word: &str) -> String {
    word.chars()
        .filter(|&c| !is_mark(c))
        .map(|c| match c {
            'أ' | 'إ' | 'آ' | 'ٱ' => 'ا',
            'ؤ' => 'و',
            'ئ' => 'ي',
            'ى' => 'ي',
            'ة' => 'ه',
            _ => c,
        })
        .filter(|&c| is_arabic_letter(c))
        .collect()
}

/// The word and its forms without the common proclitics و ف ب ل ك and ال.
fn word_forms(word: &str) -> Vec<String> {
    let mut forms = vec![word.to_string()];
    let mut w: &str = word;
    for _ in 0..2 {
        if let Some(rest) = w.strip_prefix(['و', 'ف']) {
            if rest.chars().count() >= 2 {
                forms.push(rest.to_string());
                w = rest;
            }
        }
    }
    let snapshot: Vec<String> = forms.clone();
    for f in snapshot {
        for p in ["بال", "لل", "وال", "ال", "ب", "ل", "ك"] {
            if let Some(rest) = f.strip_prefix(p) {
                if rest.chars().count() >= 2 {
                    forms.push(rest.to_string());
                }
            }
        }
    }
    forms
}

struct CueCounts {
    endorse: usize,
    endorse_negated: usize,
    say: usize,
    opinion: usize,
    vague: bool,
    quotes: usize,
    colon: bool,
    question: bool,
    negation: usize,
    no_final_punct: bool,
}

fn count(text: &str) -> CueCounts {
    let words: Vec<String> = text.split_whitespace().map(normalize_word).collect();
    let has = |k: usize, list: &[&str]| {
        word_forms(&words[k])
            .iter()
            .any(|f| list.contains(&f.as_str()))
    };
    let is_neg = |k: usize| NEGATIONS.contains(&words[k].as_str());
    let mut c = CueCounts {
        endorse: 0,
        endorse_negated: 0,
        say: 0,
        opinion: 0,
        vague: false,
        quotes: text.chars().filter(|ch| QUOTE_MARKS.contains(ch)).count(),
        colon: text.contains(':'),
        question: text.contains(['?', '؟']),
        negation: 0,
        no_final_punct: !text
            .trim_end()
            .ends_with(['.', '!', '?', '؟', '»', '"', '”']),
    };
    let joined = words.join(" ");
    for k in 0..words.len() {
        if is_neg(k) {
            c.negation += 1;
        }
        if has(k, ENDORSE_STEMS) {
            if k > 0 && is_neg(k - 1) {
                c.endorse_negated += 1;
            } else {
                c.endorse += 1;
            }
        }
        if has(k, SAY_STEMS) {
            c.say += 1;
        }
        if has(k, OPINION_STEMS) {
            c.opinion += 1;
        }
        // A vague collective within the first words is the sentence's source.
        if k < 4 && has(k, VAGUE_SOURCES) {
            c.vague = true;
        }
    }
    c.endorse += ENDORSE_PHRASES
        .iter()
        .filter(|p| joined.contains(&normalize_word_seq(p)))
        .count();
    c
}

fn normalize_word_seq(s: &str) -> String {
    s.split_whitespace()
        .map(normalize_word)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The rule baseline's label for one sentence.
pub fn cue_label(text: &str) -> Stance {
    let c = count(text);
    if c.endorse > 0 {
        return Stance::Endorsement;
    }
    if c.vague {
        return Stance::Opinion;
    }
    if c.say > 0 || c.quotes >= 2 {
        return Stance::Quotation;
    }
    if c.opinion > 0 || c.question {
        return Stance::Opinion;
    }
    Stance::Report
}

/// The rule baseline as scores (all mass on its label).
pub fn cue_scores(text: &str) -> Scores {
    Scores::certain(&LabelSet::stance(), &cue_label(text).label())
}

/// Transparent features for a head, in [`CUE_FEATURES`] order; counts are
/// capped so one long sentence cannot dominate.
pub fn cue_features(text: &str) -> Vec<f32> {
    let c = count(text);
    let cap = |n: usize| n.min(3) as f32;
    vec![
        cap(c.endorse),
        cap(c.say),
        cap(c.opinion),
        c.vague as u8 as f32,
        cap(c.quotes / 2),
        c.colon as u8 as f32,
        c.question as u8 as f32,
        cap(c.negation + c.endorse_negated),
        c.no_final_punct as u8 as f32,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_examples_of_the_scheme() {
        assert_eq!(
            cue_label("وصل الوفد إلى العاصمة صباح اليوم في زيارة تستغرق يومين."),
            Stance::Report
        );
        assert_eq!(
            cue_label("وقال الوزير: «لن نتراجع عن هذا القرار»."),
            Stance::Quotation
        );
        assert_eq!(
            cue_label("وأوضح المتحدث باسم الوزارة أن الخطة تشمل ثلاث مراحل."),
            Stance::Quotation
        );
        assert_eq!(
            cue_label("رحّبت الأحزاب بالاتفاق ووصفته بأنه إنجاز وطني."),
            Stance::Endorsement
        );
        assert_eq!(
            cue_label("يرى مراقبون أن الاتفاق قد يفتح الباب أمام تسوية أوسع."),
            Stance::Opinion
        );
    }

    #[test]
    fn negated_support_is_not_endorsement() {
        assert_ne!(
            cue_label("أعلن الحزب رفض تأييد المرشح."),
            Stance::Endorsement
        );
        assert_ne!(cue_label("الحزب لم يؤيد القرار."), Stance::Endorsement);
    }

    #[test]
    fn features_have_declared_length() {
        assert_eq!(cue_features("قال الوزير: «نعم».").len(), CUE_FEATURES.len());
        assert_eq!(normalize_word("أَشادَ"), "اشاد");
    }

    /// Where a cue entry occurs: in `text` when some word of it has the
    /// entry among its forms (stems) or its normalized words contain it
    /// (phrases), the way the rules match.
    fn occurs(entry: &str, phrase: bool, text: &str) -> bool {
        let words: Vec<String> = text.split_whitespace().map(normalize_word).collect();
        if phrase {
            return words.join(" ").contains(&normalize_word_seq(entry));
        }
        words
            .iter()
            .any(|w| word_forms(w).iter().any(|f| f == entry))
    }

    /// The cue lists may only know what the scheme and the training texts
    /// show: an entry found in the held-out article must also be found in
    /// LABELS.md or in some training text, or it was tuned on the fixture.
    #[test]
    fn cue_lists_do_not_know_the_held_out_article() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |p: std::path::PathBuf| {
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let fixture = read(root.join("eval/fixtures/article.txt"));
        let scheme = read(root.join("../shared/LABELS.md"));
        let mut training = String::new();
        for entry in std::fs::read_dir(root.join("eval/train/texts")).unwrap() {
            training.push_str(&read(entry.unwrap().path()));
            training.push('\n');
        }
        let lists: [(&[&str], bool); 6] = [
            (ENDORSE_STEMS, false),
            (ENDORSE_PHRASES, true),
            (SAY_STEMS, false),
            (OPINION_STEMS, false),
            (VAGUE_SOURCES, false),
            (NEGATIONS, false),
        ];
        let leaked: Vec<&str> = lists
            .iter()
            .flat_map(|(list, phrase)| list.iter().map(move |e| (*e, *phrase)))
            .filter(|(e, phrase)| {
                occurs(e, *phrase, &fixture)
                    && !occurs(e, *phrase, &scheme)
                    && !occurs(e, *phrase, &training)
            })
            .map(|(e, _)| e)
            .collect();
        assert!(
            leaked.is_empty(),
            "cues found only in the held-out article: {leaked:?}"
        );
    }

    #[test]
    fn the_leakage_check_sees_a_planted_cue() {
        // A word of the article that no training text has must be caught.
        assert!(occurs("مويدو", false, "ويرى مؤيدو الخطوة أنها مهمة"));
        assert!(occurs("دعم واسع", true, "وسط دعم واسع من الأهالي"));
        assert!(!occurs("دعم واسع", true, "دعم مالي واسع"));
    }
}
