//! A compact sentencepiece-unigram model for the `tokenizers` pipeline.
//!
//! Contract: [`CompactUnigram`] is a `tokenizers::Model` that reads the
//! `"type": "Unigram"` model of a `tokenizer.json` and tokenizes exactly as
//! `tokenizers`' own `Unigram` does (same Viterbi, same tie-breaking, unknown
//! characters fused), which the tests check on every training sentence.
//!
//! Why: `tokenizers`' `Unigram` keeps a character trie with a hash map per
//! node; for XLM-R's 250k pieces that is about 280 MB resident, more than
//! the encoder's weights. Here the pieces live in one string arena with a
//! hash index (about 12 MB), and each candidate piece is found by extending
//! a running hash one byte at a time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tokenizers::models::unigram::UnigramTrainer;
use tokenizers::{Model, Token};

/// The penalty `tokenizers` (after sentencepiece) gives unknown characters
/// below the lowest piece score.
const UNK_PENALTY: f64 = 10.0;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline]
fn fnv_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(FNV_PRIME)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| fnv_step(h, b))
}

pub struct CompactUnigram {
    /// All pieces end to end; piece `i` is `arena[starts[i]..starts[i + 1]]`.
    arena: String,
    starts: Vec<u32>,
    scores: Vec<f64>,
    /// FNV-1a hash of a piece → its id (hits are checked against the arena).
    /// Pieces whose hash collides with an earlier one go to `collisions`.
    index: HashMap<u64, u32>,
    collisions: HashMap<String, u32>,
    unk_id: u32,
    min_score: f64,
    max_piece_bytes: usize,
}

impl std::fmt::Debug for CompactUnigram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CompactUnigram({} pieces)", self.scores.len())
    }
}

impl CompactUnigram {
    /// Build from `(piece, score)` in id order.
    pub fn new(pieces: Vec<(String, f64)>, unk_id: u32) -> Result<Self, String> {
        if unk_id as usize >= pieces.len() {
            return Err(format!(
                "unk_id {unk_id} is outside the {} pieces",
                pieces.len()
            ));
        }
        let mut arena = String::with_capacity(pieces.iter().map(|(p, _)| p.len()).sum());
        let mut starts = Vec::with_capacity(pieces.len() + 1);
        let mut scores = Vec::with_capacity(pieces.len());
        let mut index = HashMap::with_capacity(pieces.len());
        let mut collisions = HashMap::new();
        let mut max_piece_bytes = 0;
        for (id, (piece, score)) in pieces.into_iter().enumerate() {
            starts.push(arena.len() as u32);
            arena.push_str(&piece);
            scores.push(score);
            max_piece_bytes = max_piece_bytes.max(piece.len());
            let id = id as u32;
            let hash = fnv(piece.as_bytes());
            match index.get(&hash).copied() {
                // A later duplicate of the same piece wins, as in `tokenizers`.
                Some(other) if Self::piece_of(&arena, &starts, other) == piece => {
                    index.insert(hash, id);
                }
                Some(_) => {
                    collisions.insert(piece, id);
                }
                None => {
                    index.insert(hash, id);
                }
            }
        }
        starts.push(arena.len() as u32);
        let min_score = scores.iter().copied().fold(f64::INFINITY, f64::min);
        arena.shrink_to_fit();
        Ok(Self {
            arena,
            starts,
            scores,
            index,
            collisions,
            unk_id,
            min_score,
            max_piece_bytes,
        })
    }

    fn piece_of<'a>(arena: &'a str, starts: &[u32], id: u32) -> &'a str {
        let i = id as usize;
        // While building, the last piece's end is the arena's end.
        let end = starts.get(i + 1).map_or(arena.len(), |&e| e as usize);
        &arena[starts[i] as usize..end]
    }

    fn piece(&self, id: u32) -> &str {
        Self::piece_of(&self.arena, &self.starts, id)
    }

    fn lookup_hashed(&self, hash: u64, text: &str) -> Option<u32> {
        match self.index.get(&hash) {
            Some(&id) if self.piece(id) == text => Some(id),
            _ if !self.collisions.is_empty() => self.collisions.get(text).copied(),
            _ => None,
        }
    }

    fn lookup(&self, text: &str) -> Option<u32> {
        self.lookup_hashed(fnv(text.as_bytes()), text)
    }

    /// Best segmentation of `sentence` (sentencepiece's optimized Viterbi),
    /// as byte ranges with their ids; runs of unknown characters are fused.
    fn segment(&self, sentence: &str) -> Vec<(usize, usize, u32)> {
        #[derive(Clone, Copy)]
        struct Node {
            id: u32,
            score: f64,
            start: usize,
            set: bool,
        }
        let bytes = sentence.as_bytes();
        let size = bytes.len();
        let unk_score = self.min_score - UNK_PENALTY;
        let mut best = vec![
            Node {
                id: 0,
                score: 0.0,
                start: 0,
                set: false
            };
            size + 1
        ];
        let mut start = 0;
        while start < size {
            let here = best[start].score;
            let char_len = sentence[start..].chars().next().map_or(1, char::len_utf8);
            let mut has_single = false;
            let mut hash = FNV_OFFSET;
            let limit = size.min(start + self.max_piece_bytes);
            // Candidate pieces in order of length, as a trie would give them.
            for end in start + 1..=limit {
                hash = fnv_step(hash, bytes[end - 1]);
                if !sentence.is_char_boundary(end) {
                    continue;
                }
                if let Some(id) = self.lookup_hashed(hash, &sentence[start..end]) {
                    let candidate = here + self.scores[id as usize];
                    let node = &mut best[end];
                    if !node.set || candidate > node.score {
                        *node = Node {
                            id,
                            score: candidate,
                            start,
                            set: true,
                        };
                    }
                    if end - start == char_len {
                        has_single = true;
                    }
                }
            }
            if !has_single {
                let candidate = here + unk_score;
                let node = &mut best[start + char_len];
                if !node.set || candidate > node.score {
                    *node = Node {
                        id: self.unk_id,
                        score: candidate,
                        start,
                        set: true,
                    };
                }
            }
            start += char_len;
        }
        let mut out = Vec::new();
        let mut end = size;
        let mut unk_end = None;
        while end > 0 {
            let node = best[end];
            if node.id == self.unk_id {
                unk_end.get_or_insert(end);
            } else {
                if let Some(e) = unk_end.take() {
                    out.push((end, e, self.unk_id));
                }
                out.push((node.start, end, node.id));
            }
            end = node.start;
        }
        if let Some(e) = unk_end {
            out.push((0, e, self.unk_id));
        }
        out.reverse();
        out
    }
}

impl Model for CompactUnigram {
    type Trainer = UnigramTrainer;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        Ok(self
            .segment(sequence)
            .into_iter()
            .map(|(s, e, id)| {
                let text = &sequence[s..e];
                // A fused run of unknowns may itself be a piece.
                let id = if id == self.unk_id {
                    self.lookup(text).unwrap_or(id)
                } else {
                    id
                };
                Token::new(id, text.to_string(), (s, e))
            })
            .collect())
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.lookup(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        ((id as usize) < self.scores.len()).then(|| self.piece(id).to_string())
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        (0..self.scores.len() as u32)
            .map(|id| (self.piece(id).to_string(), id))
            .collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.scores.len()
    }

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("mawqif's compact unigram model is read-only".into())
    }

    fn get_trainer(&self) -> UnigramTrainer {
        UnigramTrainer::default()
    }
}

/// Reads the `model` object of a tokenizer.json; only `"type": "Unigram"`
/// without byte fallback is accepted (the caller then uses `tokenizers`' own).
impl<'de> Deserialize<'de> for CompactUnigram {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModelVisitor;
        impl<'de> Visitor<'de> for ModelVisitor {
            type Value = CompactUnigram;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Unigram model object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut kind: Option<String> = None;
                let mut unk_id: Option<u32> = None;
                let mut vocab: Option<Vec<(String, f64)>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "type" => kind = Some(map.next_value()?),
                        "unk_id" => unk_id = map.next_value()?,
                        "vocab" => vocab = Some(map.next_value::<VocabList>()?.0),
                        "byte_fallback" => {
                            if map.next_value::<Option<bool>>()?.unwrap_or(false) {
                                return Err(A::Error::custom("byte_fallback is not supported"));
                            }
                        }
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                if kind.as_deref() != Some("Unigram") {
                    return Err(A::Error::custom("not a Unigram model"));
                }
                let unk_id =
                    unk_id.ok_or_else(|| A::Error::custom("Unigram model has no unk_id"))?;
                let vocab = vocab.ok_or_else(|| A::Error::custom("Unigram model has no vocab"))?;
                CompactUnigram::new(vocab, unk_id).map_err(A::Error::custom)
            }
        }
        deserializer.deserialize_map(ModelVisitor)
    }
}

/// `[[piece, score], …]`, read straight into the vector.
struct VocabList(Vec<(String, f64)>);

impl<'de> Deserialize<'de> for VocabList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = VocabList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of [piece, score] pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(pair) = seq.next_element::<(String, f64)>()? {
                    out.push(pair);
                }
                Ok(VocabList(out))
            }
        }
        deserializer.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::unigram::Unigram;

    fn pieces() -> Vec<(String, f64)> {
        [
            ("<unk>", 0.0),
            ("▁", -2.0),
            ("a", -3.0),
            ("b", -3.5),
            ("ab", -4.0),
            ("▁ab", -5.5),
            ("abc", -6.0),
            ("c", -3.2),
            ("▁a", -4.1),
            ("bc", -4.0),
            ("ال", -2.5),
            ("ا", -3.0),
            ("ل", -3.0),
        ]
        .iter()
        .map(|(p, s)| (p.to_string(), *s))
        .collect()
    }

    #[test]
    fn same_tokens_as_the_tokenizers_unigram() {
        let reference = Unigram::from(pieces(), Some(0), false).unwrap();
        let compact = CompactUnigram::new(pieces(), 0).unwrap();
        for text in [
            "▁abc", "abcab", "▁a▁b", "xyz", "axbyc", "الال", "▁", "", "zالz", "ab▁zz",
        ] {
            let want: Vec<(u32, String)> = reference
                .tokenize(text)
                .unwrap()
                .into_iter()
                .map(|t| (t.id, t.value))
                .collect();
            let got: Vec<(u32, String)> = compact
                .tokenize(text)
                .unwrap()
                .into_iter()
                .map(|t| (t.id, t.value))
                .collect();
            assert_eq!(got, want, "{text:?}");
        }
    }
}
