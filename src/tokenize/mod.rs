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
        let (inner, source) = if json.is_file() {
            (load_json(&json)?, json)
        } else if vocab.is_file() {
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
        let pad_id = match pad_id {
            Some(id) => id,
            None => ["<pad>", "[PAD]"]
                .iter()
                .find_map(|t| with_inner!(&inner, tok => tok.token_to_id(t)))
                .unwrap_or(0),
        };
        Ok(Self {
            inner,
            pad_id,
            max_length: max_length.max(2),
            source,
        })
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
fn load_json(path: &Path) -> Result<Inner> {
    let text = std::fs::read_to_string(path).map_err(|e| MawqifError::io(path, e))?;
    if let Ok(compact) = serde_json::from_str::<CompactTokenizer>(&text) {
        return Ok(Inner::Compact(Box::new(compact)));
    }
    let tok =
        Tokenizer::from_str(&text).map_err(|e| MawqifError::malformed(path, e.to_string()))?;
    Ok(Inner::Standard(Box::new(tok)))
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
