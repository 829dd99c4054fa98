//! Stage 3: turn preprocessed sentences into token ids.
//!
//! Contract: [`SentenceTokenizer::encode`] maps each input string to its ids
//! with the model's special tokens, never longer than `max_length`; the
//! untruncated length is kept so callers can warn or refuse. Loaded from a
//! `tokenizer.json`, or built as a BERT WordPiece from `vocab.txt` alone
//! (no lowercasing, no accent stripping: stripping deletes Arabic marks and
//! turns hamza forms into bare letters).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
    TokenizerImpl,
};

use crate::error::{MawqifError, Result};
use unigram::CompactUnigram;

pub mod unigram;

/// A `tokenizer.json` pipeline around mawqif's compact unigram model.
type CompactTokenizer = TokenizerImpl<
    CompactUnigram,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

enum Inner {
    /// Unigram `tokenizer.json` (XLM-R, e5): same output, a tenth of the memory.
    Compact(Box<CompactTokenizer>),
    /// Everything else, through `tokenizers` as is.
    Standard(Box<Tokenizer>),
}

/// Calls the same method on either kind of tokenizer.
macro_rules! with_inner {
    ($inner:expr, $t:ident => $body:expr) => {
        match $inner {
            Inner::Compact($t) => $body,
            Inner::Standard($t) => $body,
        }
    };
}

/// Ids of one sentence, plus its length before truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedSentence {
    pub ids: Vec<u32>,
    pub untruncated_len: usize,
}

impl TokenizedSentence {
    pub fn was_truncated(&self) -> bool {
        self.untruncated_len > self.ids.len()
    }
}

pub struct SentenceTokenizer {
    inner: Inner,
    pad_id: u32,
    max_length: usize,
    source: PathBuf,
}

impl SentenceTokenizer {
    /// Load from a model directory: `tokenizer.json` if present, else `vocab.txt`.
    /// `pad_id` falls back to the tokenizer's own pad token when `None`.
    pub fn from_model_dir(dir: &Path, pad_id: Option<u32>, max_length: usize) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        if json.is_file() {
            let text = std::fs::read_to_string(&json).map_err(|e| MawqifError::io(&json, e))?;
            return Self::from_json(&text, &json, pad_id, max_length);
        }
        let (inner, source) = if vocab.is_file() {
            (
                Inner::Standard(Box::new(wordpiece_from_vocab(&vocab)?)),
                vocab,
            )
        } else {
            return Err(MawqifError::MissingFile {
                path: json,
                hint: format!(
                    "a model directory needs tokenizer.json or vocab.txt (neither is in {})",
                    dir.display()
                ),
            });
        };
        Ok(Self::new(inner, source, pad_id, max_length))
    }

    /// Load from the text of a `tokenizer.json`; `source` is the file it came
    /// from, named in errors.
    pub fn from_json(
        text: &str,
        source: &Path,
        pad_id: Option<u32>,
        max_length: usize,
    ) -> Result<Self> {
        let inner = load_json(text, source)?;
        Ok(Self::new(inner, source.to_path_buf(), pad_id, max_length))
    }

    fn new(inner: Inner, source: PathBuf, pad_id: Option<u32>, max_length: usize) -> Self {
        let pad_id = match pad_id {
            Some(id) => id,
            None => ["<pad>", "[PAD]"]
                .iter()
                .find_map(|t| with_inner!(&inner, tok => tok.token_to_id(t)))
                .unwrap_or(0),
        };
        Self {
            inner,
            pad_id,
            max_length: max_length.max(2),
            source,
        }
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn vocab_size(&self) -> usize {
        with_inner!(&self.inner, tok => tok.get_vocab_size(true))
    }

    /// The file the tokenizer was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Encode sentences; truncation keeps the final special token.
    pub fn encode(&self, texts: &[String]) -> Result<Vec<TokenizedSentence>> {
        let encodings =
            with_inner!(&self.inner, tok => tok.encode_batch_fast(texts.to_vec(), true))
                .map_err(|e| MawqifError::Tokenizer(e.to_string()))?;
        Ok(encodings
            .into_iter()
            .map(|enc| {
                let mut ids = enc.get_ids().to_vec();
                let untruncated_len = ids.len();
                if ids.len() > self.max_length {
                    let last = ids[ids.len() - 1];
                    ids.truncate(self.max_length - 1);
                    ids.push(last);
                }
                TokenizedSentence {
                    ids,
                    untruncated_len,
                }
            })
            .collect())
    }

    /// The token strings of one text, for debugging and parity tests.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let enc = with_inner!(&self.inner, tok => tok.encode(text, true))
            .map_err(|e| MawqifError::Tokenizer(e.to_string()))?;
        Ok(enc.get_tokens().to_vec())
    }
}

/// A `tokenizer.json`: Unigram models through [`CompactUnigram`], others
/// through `tokenizers`.
fn load_json(text: &str, path: &Path) -> Result<Inner> {
    refuse_what_tokenizers_panics_on(text, path)?;
    if let Ok(compact) = serde_json::from_str::<CompactTokenizer>(text) {
        return Ok(Inner::Compact(Box::new(compact)));
    }
    let tok = Tokenizer::from_str(text).map_err(|e| MawqifError::malformed(path, e.to_string()))?;
    Ok(Inner::Standard(Box::new(tok)))
}

/// `tokenizers` panics, rather than returning an error, on some malformed
/// tokenizer.json files: a JSON syntax error or an out-of-range number
/// inside `decoder`; a
/// `Precompiled` normalizer without a charsmap, or whose charsmap claims
/// more trie than it holds (which also sizes an allocation by itself), or
/// whose trie leads lookups out of bounds, which panics later, while
/// encoding (the fuzz target `tokenizer_json`, fuzz/regressions/). Such files
/// are refused here first, with the file named. One pass over the text:
/// everything but the normalizer is skipped without being stored.
fn refuse_what_tokenizers_panics_on(text: &str, path: &Path) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Parts {
        #[serde(default)]
        normalizer: Option<serde_json::Value>,
        // Read as a value so that what `tokenizers` would `expect()` on (a
        // number out of f64's range, found by the fuzz target) is an error here.
        #[serde(default)]
        #[allow(dead_code)]
        decoder: Option<serde_json::Value>,
    }
    let parts: Parts = serde_json::from_str(text)
        .map_err(|e| MawqifError::malformed(path, format!("not a tokenizer.json: {e}")))?;
    match parts.normalizer {
        Some(normalizer) => check_precompiled(&normalizer)
            .map_err(|why| MawqifError::malformed(path, format!("Precompiled normalizer: {why}"))),
        None => Ok(()),
    }
}

/// Every `Precompiled` normalizer in `value` (they nest in `Sequence`) has a
/// charsmap that is safe to hand to `tokenizers`.
fn check_precompiled(value: &serde_json::Value) -> std::result::Result<(), String> {
    use base64::Engine as _;
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("Precompiled") {
                let encoded = map
                    .get("precompiled_charsmap")
                    .and_then(Value::as_str)
                    .ok_or("no precompiled_charsmap string")?;
                let charsmap = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| format!("precompiled_charsmap is not base64: {e}"))?;
                check_charsmap(&charsmap)?;
            }
            map.values().try_for_each(check_precompiled)
        }
        Value::Array(items) => items.iter().try_for_each(check_precompiled),
        _ => Ok(()),
    }
}

/// A sentencepiece `precompiled_charsmap` (u32 trie size, the double-array
/// trie as u32 units, then the replacement strings) that `tokenizers` can
/// use without panicking: its trie is as long as it claims, and every
/// lookup, for any input, stays inside the trie and lands on a replacement
/// that starts at a character boundary of the strings. The unit layout
/// (label, leaf flag, offset, value) is sentencepiece's `Darts` one.
pub(crate) fn check_charsmap(charsmap: &[u8]) -> std::result::Result<(), String> {
    let header = charsmap.get(..4).ok_or("shorter than its 4-byte header")?;
    let units = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize / 4;
    let trie_end = units
        .checked_mul(4)
        .and_then(|n| n.checked_add(4))
        .filter(|&end| end <= charsmap.len())
        .ok_or("the trie is longer than the charsmap")?;
    let trie: Vec<usize> = charsmap[4..trie_end]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let strings = std::str::from_utf8(&charsmap[trie_end..])
        .map_err(|_| "the replacement strings are not UTF-8")?;
    let label = |unit: usize| unit & ((1 << 31) | 0xFF);
    let has_leaf = |unit: usize| (unit >> 8) & 1 == 1;
    let offset = |unit: usize| (unit >> 10) << ((unit & (1 << 9)) >> 6);
    let value = |unit: usize| unit & ((1 << 31) - 1);
    let root = *trie.first().ok_or("the trie is empty")?;
    // Every position a lookup can be at after a byte; each comes from a
    // distinct unit, so there are at most as many as units.
    let mut seen = std::collections::HashSet::from([offset(root)]);
    let mut todo = vec![offset(root)];
    while let Some(position) = todo.pop() {
        for byte in 1..=255usize {
            let at = position ^ byte;
            let unit = *trie.get(at).ok_or("a lookup leaves the trie")?;
            if label(unit) != byte {
                continue;
            }
            let next = at ^ offset(unit);
            if has_leaf(unit) {
                let leaf = *trie.get(next).ok_or("a leaf lies outside the trie")?;
                let start = value(leaf);
                if !strings.is_char_boundary(start) {
                    return Err(format!(
                        "a replacement starts at {start}, outside the strings or mid-character"
                    ));
                }
            }
            if seen.insert(next) {
                todo.push(next);
            }
        }
    }
    Ok(())
}

/// A BERT WordPiece tokenizer built from `vocab.txt`, keeping case and marks.
pub fn wordpiece_from_vocab(path: &Path) -> Result<Tokenizer> {
    let text = std::fs::read_to_string(path).map_err(|e| MawqifError::io(path, e))?;
    let mut vocab = HashMap::new();
    for (id, line) in text.lines().enumerate() {
        let token = line.trim_end_matches('\r');
        if token.is_empty() {
            continue;
        }
        vocab.insert(token.to_string(), id as u32);
    }
    let special = |t: &str| {
        vocab
            .get(t)
            .copied()
            .ok_or_else(|| MawqifError::malformed(path, format!("no {t} token in the vocabulary")))
    };
    let cls = special("[CLS]")?;
    let sep = special("[SEP]")?;
    special("[UNK]")?;
    let path_str = path
        .to_str()
        .ok_or_else(|| MawqifError::malformed(path, "path is not UTF-8"))?;
    let model = WordPiece::from_file(path_str)
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .build()
        .map_err(|e| MawqifError::malformed(path, e.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, Some(false), false)))
        .map_err(|e| MawqifError::Tokenizer(e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab_dir(tokens: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vocab.txt"), tokens.join("\n")).unwrap();
        dir
    }

    #[test]
    fn wordpiece_keeps_hamza_and_shadda() {
        let dir = vocab_dir(&[
            "[PAD]",
            "[UNK]",
            "[CLS]",
            "[SEP]",
            "أحمد",
            "إلى",
            "آخر",
            "مؤتمر",
            "رئيس",
            "##ّ",
            "شد",
            "##د",
            "مؤ",
            "##تمر",
            "ئ",
        ]);
        let tok = SentenceTokenizer::from_model_dir(dir.path(), None, 512).unwrap();
        assert_eq!(
            tok.tokens("أحمد إلى آخر مؤتمر رئيس").unwrap(),
            vec!["[CLS]", "أحمد", "إلى", "آخر", "مؤتمر", "رئيس", "[SEP]"]
        );
        // Shadda (U+0651) must survive: stripping accents would give شد ##د.
        assert_eq!(
            tok.tokens("شدّد ئ").unwrap(),
            vec!["[CLS]", "شد", "##ّ", "##د", "ئ", "[SEP]"]
        );
        assert_eq!(tok.pad_id(), 0);
    }

    #[test]
    fn truncation_keeps_final_special_token() {
        let dir = vocab_dir(&["[PAD]", "[UNK]", "[CLS]", "[SEP]", "كلمة"]);
        let tok = SentenceTokenizer::from_model_dir(dir.path(), None, 5).unwrap();
        let out = tok
            .encode(&["كلمة كلمة كلمة كلمة كلمة".to_string()])
            .unwrap();
        assert_eq!(out[0].ids, vec![2, 4, 4, 4, 3]);
        assert_eq!(out[0].untruncated_len, 7);
        assert!(out[0].was_truncated());
    }

    #[test]
    fn tokenizer_json_that_tokenizers_panics_on_is_refused() {
        let path = Path::new("m/tokenizer.json");
        let refused = |json: &str| {
            let err = SentenceTokenizer::from_json(json, path, None, 16)
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains("m/tokenizer.json"), "{err}");
            err
        };
        // A syntax error inside `decoder` (tokenizers: expect("Helper")).
        refused(r#"{"decoder":{"type":"Metaspace" "x":1},"model":{"type":"WordLevel"}}"#);
        let with_charsmap = |b64: &str| {
            format!(
                r#"{{"normalizer":{{"type":"Sequence","normalizers":[{{"type":"Precompiled","precompiled_charsmap":"{b64}"}}]}},"model":{{"type":"WordLevel","vocab":{{"a":0}},"unk_token":"a"}}}}"#
            )
        };
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        // A charsmap claiming a 4 GB trie in 4 bytes, and one whose root
        // sends every lookup out of the trie.
        refused(&with_charsmap(&b64(&[0xff, 0xff, 0xff, 0xff])));
        let mut out_of_bounds = 4u32.to_le_bytes().to_vec();
        out_of_bounds.extend_from_slice(&(1u32 << 20).to_le_bytes());
        assert!(refused(&with_charsmap(&b64(&out_of_bounds))).contains("leaves the trie"));
        refused(r#"{"normalizer":{"type":"Precompiled"},"model":{"type":"WordLevel"}}"#);
    }

    #[test]
    fn missing_tokenizer_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = SentenceTokenizer::from_model_dir(dir.path(), None, 512)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("vocab.txt"),
            "{err}"
        );
    }
}
