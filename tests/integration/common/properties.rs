//! The properties each fuzz target checks, one `check_*` function per parser
//! mawqif wrote itself. The fuzz crate (fuzz/) includes this file, so a
//! libFuzzer campaign and `cargo test` (which replays the seed corpora and
//! every input the fuzzer ever failed on, tests/integration/fuzz_regressions.rs)
//! run the very same checks. A check panics when a property fails.
//!
//! Loaders are also held to a memory bound: what a call allocates on its
//! thread, at its peak, must stay within a small multiple of the input's
//! size (plus a constant), so a header that claims a 100 GB tensor, or a
//! count that sizes a vector by itself, is caught.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::var_builder::SimpleBackend;
use mawqif::eval::gold::{
    match_predictions, parse_gold_str, parse_predictions_str, GoldFormat, GoldItem,
};
use mawqif::hub::listing::{choose_files, parse_listing, Expected};
use mawqif::model::e5s1;
use mawqif::model::weights::SafetensorsFiles;
use mawqif::model::Registry;
use mawqif::text::arabic::{is_arabic_letter, is_mark};
use mawqif::text::input::text_from_bytes;
use mawqif::text::{Preprocessing, Preprocessor, Segmenter};
use mawqif::tokenize::unigram::CompactUnigram;
use mawqif::tokenize::SentenceTokenizer;

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------
// The memory bound.

thread_local! {
    // Bytes this thread has allocated and not freed (frees by other threads
    // make it drift, which is why only single-threaded loaders are bounded),
    // the peak since `bounded` started, and the ceiling while it runs.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static CEILING: Cell<isize> = const { Cell::new(isize::MAX) };
}

/// The system allocator, counting what each thread allocates. With
/// `refuse` set, an allocation that would take the thread past the ceiling
/// of a running [`bounded`] call fails, so the process aborts at the
/// offending allocation (what a fuzzer wants); without it the overshoot is
/// only recorded and [`bounded`]'s caller sees it.
pub struct CountingAlloc {
    pub refuse: bool,
}

fn add(delta: isize, refuse: bool) -> bool {
    LIVE.try_with(|live| {
        let now = live.get().wrapping_add(delta);
        if refuse && delta > 0 && now > CEILING.get() {
            return false;
        }
        live.set(now);
        PEAK.set(PEAK.get().max(now));
        true
    })
    // During thread teardown nothing is counted.
    .unwrap_or(true)
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the counting touches only const-initialised thread-locals,
// which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !add(layout.size() as isize, self.refuse) {
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if p.is_null() {
            add(-(layout.size() as isize), false);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !add(layout.size() as isize, self.refuse) {
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(layout);
        if p.is_null() {
            add(-(layout.size() as isize), false);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        add(-(layout.size() as isize), false);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let delta = new_size as isize - layout.size() as isize;
        if !add(delta, self.refuse) {
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            add(-delta, false);
        }
        p
    }
}

/// Run `f`, then check that its peak allocation on this thread stayed
/// within `limit` bytes (`what` names the call in the failure).
pub fn bounded<T>(what: &str, limit: usize, f: impl FnOnce() -> T) -> T {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    CEILING.with(|c| c.set(start.saturating_add(limit as isize)));
    let out = f();
    CEILING.with(|c| c.set(isize::MAX));
    let peak = PEAK.with(Cell::get) - start;
    assert!(
        peak <= limit as isize,
        "{what} allocated {peak} bytes at its peak, more than its bound of {limit}"
    );
    out
}

/// Split at the first NUL: two inputs from one.
fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(k) => (&data[..k], &data[k + 1..]),
        None => (data, &[]),
    }
}

fn assert_names(err: &impl std::fmt::Display, name: &str) {
    let msg = err.to_string();
    assert!(msg.contains(name), "the error does not name {name}: {msg}");
}

// ---------------------------------------------------------------------------
// text/segment.rs (with text/input.rs in front of it)

pub fn check_segment(data: &[u8]) {
    let path = Path::new("fuzz-input.txt");
    let source = match text_from_bytes(path, data.to_vec()) {
        Ok(text) => text,
        Err(e) => {
            assert_names(&e, "fuzz-input.txt");
            // The segmenter still gets to see what the bytes decode to.
            String::from_utf8_lossy(data).into_owned()
        }
    };
    let segmenter = Segmenter::new();
    let units = segmenter.segment(&source);
    let mut previous_end = 0;
    for (k, u) in units.iter().enumerate() {
        assert_eq!(u.index, k, "indices count from 0");
        assert!(u.start < u.end, "unit {k} is empty: {u:?}");
        assert!(u.end <= source.len(), "unit {k} ends past the text");
        assert!(
            source.is_char_boundary(u.start) && source.is_char_boundary(u.end),
            "unit {k} is not on char boundaries"
        );
        assert!(u.start >= previous_end, "unit {k} overlaps or goes back");
        assert_eq!(u.text, source[u.start..u.end], "unit {k}: text != span");
        assert!(!u.text.contains('\n'), "unit {k} crosses a line");
        assert!(
            u.text.chars().any(is_arabic_letter),
            "unit {k} has no Arabic letter"
        );
        let (first, last) = (u.text.chars().next(), u.text.chars().last());
        assert!(
            !first.is_some_and(char::is_whitespace) && !last.is_some_and(char::is_whitespace),
            "unit {k} is not trimmed"
        );
        previous_end = u.end;
    }
    assert_eq!(segmenter.segment(&source), units, "not deterministic");
}

// ---------------------------------------------------------------------------
// text/preprocess.rs

pub fn check_preprocess(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for prefix in ["", "query: "] {
        for scheme in [
            Preprocessing::None,
            Preprocessing::StripMarks,
            Preprocessing::ArabertV02,
        ] {
            let p = Preprocessor::new(scheme, prefix);
            let out = p.apply(&text);
            assert_eq!(p.apply(&text), out, "{scheme:?} is not deterministic");
            let body = out
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{scheme:?} lost the prefix"));
            match scheme {
                Preprocessing::None => assert_eq!(body, text),
                Preprocessing::StripMarks => {
                    assert!(!body.chars().any(is_mark), "a mark survived");
                    let kept: String = text.chars().filter(|&c| !is_mark(c)).collect();
                    assert_eq!(body, kept);
                }
                Preprocessing::ArabertV02 => {
                    // Words joined by single spaces, nothing else blank.
                    assert!(!body.starts_with(' ') && !body.ends_with(' '), "{body:?}");
                    assert!(!body.contains("  "), "double space in {body:?}");
                    assert!(
                        !body.chars().any(|c| c != ' ' && c.is_whitespace()),
                        "whitespace other than spaces in {body:?}"
                    );
                    // Placeholders and spacing grow the text, boundedly.
                    assert!(body.len() <= 16 * text.len() + 64, "output blew up");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// tokenize/: a tokenizer.json (compact unigram, else `tokenizers`), then encoding

pub fn check_tokenizer_json(data: &[u8]) {
    let (json, texts) = split_nul(data);
    let Ok(json) = std::str::from_utf8(json) else {
        return;
    };
    let source = Path::new("fuzz/tokenizer.json");
    let loaded = bounded(
        "loading tokenizer.json",
        256 * json.len() + 64 * MIB,
        || SentenceTokenizer::from_json(json, source, None, 32).map_err(Box::new),
    );
    let tokenizer = match loaded {
        Ok(t) => t,
        Err(e) => return assert_names(&e, "fuzz/tokenizer.json"),
    };
    let texts: Vec<String> = String::from_utf8_lossy(texts)
        .split('\n')
        .map(str::to_string)
        .collect();
    let first = tokenizer.encode(&texts);
    let second = tokenizer.encode(&texts);
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "encoding is not deterministic");
            assert_eq!(a.len(), texts.len());
            for s in a {
                assert!(s.ids.len() <= 32, "longer than max_length");
                assert!(s.untruncated_len >= s.ids.len());
            }
        }
        (Err(_), Err(_)) => {}
        _ => panic!("encoding succeeded once and failed once"),
    }
}

// ---------------------------------------------------------------------------
// tokenize/unigram.rs against `tokenizers`' own Unigram

/// Bytes → characters from a small alphabet, so that random pieces and
/// texts share characters (and pieces match) often.
fn alphabet_char(b: u8) -> char {
    const ALPHABET: [char; 16] = [
        '\u{2581}', 'ا', 'ل', 'م', 'ن', 'ي', 'a', 'b', 'c', ' ', '.', 'ّ', '😀', '\u{200d}', 'e',
        'é',
    ];
    ALPHABET[(b & 15) as usize]
}

pub fn check_unigram(data: &[u8]) {
    use tokenizers::models::unigram::Unigram;
    use tokenizers::Model;
    let mut it = data.iter().copied();
    let n_pieces = 1 + it.next().unwrap_or(0) as usize % 48;
    let mut pieces = Vec::with_capacity(n_pieces);
    for _ in 0..n_pieces {
        let len = it.next().unwrap_or(1) as usize % 6;
        let piece: String = (0..len)
            .map(|_| alphabet_char(it.next().unwrap_or(0)))
            .collect();
        let score = -(it.next().unwrap_or(0) as f64) / 16.0;
        pieces.push((piece, score));
    }
    let unk = it.next().unwrap_or(0) as usize % n_pieces;
    let text: String = it.map(alphabet_char).collect();
    let Ok(reference) = Unigram::from(pieces.clone(), Some(unk), false) else {
        return;
    };
    let compact = CompactUnigram::new(pieces.clone(), unk as u32)
        .expect("tokenizers accepted this vocabulary, the compact model must too");
    let triples = |tokens: Vec<tokenizers::Token>| -> Vec<(u32, String, (usize, usize))> {
        tokens
            .into_iter()
            .map(|t| (t.id, t.value, t.offsets))
            .collect()
    };
    let want = triples(reference.tokenize(&text).expect("tokenizers' Unigram"));
    let got = triples(compact.tokenize(&text).expect("the compact unigram"));
    assert_eq!(got, want, "pieces {pieces:?}, unk {unk}, text {text:?}");
    for (id, value, (s, e)) in &got {
        assert_eq!(&text[*s..*e], value);
        assert!((*id as usize) < pieces.len());
    }
    // The same vocabulary through tokenizer.json's `model` object.
    let json = serde_json::json!({"type": "Unigram", "unk_id": unk, "vocab": pieces});
    let parsed: CompactUnigram = serde_json::from_value(json).expect("a valid Unigram object");
    assert_eq!(parsed.get_vocab_size(), compact.get_vocab_size());
    let again: Vec<u32> = parsed
        .tokenize(&text)
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(again, got.iter().map(|t| t.0).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// model/weights.rs: safetensors files

/// Where the safetensors check writes its file: a directory of this process
/// (in memory when /dev/shm exists), made once.
fn scratch_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("mawqif-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    })
}

pub fn check_safetensors(data: &[u8]) {
    let path = scratch_dir().join("w.safetensors");
    std::fs::write(&path, data).expect("write the scratch file");
    let name = path.display().to_string();
    let limit = 16 * data.len() + 8 * MIB;
    let files = match bounded("indexing safetensors", limit, || {
        SafetensorsFiles::open(&[&path]).map_err(Box::new)
    }) {
        Ok(f) => f,
        Err(e) => return assert_names(&e, &name),
    };
    let names: Vec<String> = files.names().map(str::to_string).collect();
    for tensor in &names {
        let shape = files
            .shape(tensor)
            .expect("a listed tensor has a shape")
            .to_vec();
        let elems: usize = shape.iter().product();
        assert!(
            elems <= data.len(),
            "{tensor}: {shape:?} is more than the file holds"
        );
        // Through the loader the models use (low-rank updates merged in).
        let read = bounded("reading a tensor", limit, || {
            files.get_unchecked(tensor, DType::F32, &Device::Cpu)
        });
        if let Ok(t) = read {
            assert_eq!(t.dims(), shape.as_slice(), "{tensor}");
        }
        // And through the f16 reader of the fast engine.
        match bounded("reading f16", limit, || {
            files.read_f16(&[tensor]).map_err(Box::new)
        }) {
            Ok(Some((dims, values))) => {
                assert_eq!(dims, shape);
                assert_eq!(values.len(), elems);
            }
            Ok(None) => panic!("{tensor} is listed but not found"),
            Err(e) => assert_names(&e, &name),
        }
    }
}

// ---------------------------------------------------------------------------
// model/e5s1.rs: the importer's parser and the tokenizer it builds

pub fn check_e5s1(data: &[u8]) {
    let path = Path::new("fuzz/e5-small-q4.bin");
    let parsed = bounded("parsing E5S1", 24 * data.len() + 8 * MIB, || {
        e5s1::parse(data, path).map_err(Box::new)
    });
    let model = match parsed {
        Ok(m) => m,
        Err(e) => return assert_names(&e, "fuzz/e5-small-q4.bin"),
    };
    for id in [model.bos_id, model.eos_id, model.pad_id, model.unk_id] {
        assert!((id as usize) < model.pieces.len());
    }
    for (name, (values, shape)) in &model.tensors {
        if !shape.is_empty() {
            assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}");
        }
    }
    let built = bounded(
        "building the E5S1 tokenizer",
        512 * data.len() + 64 * MIB,
        || e5s1::build_tokenizer(&model).map_err(Box::new),
    );
    if let Ok(tokenizer) = built {
        for text in ["قال الوزير إن الحكومة ستدعم المشروع.", "", "a\u{200d}b  c"]
        {
            let enc = tokenizer.encode(text, true).expect("encode");
            for &id in enc.get_ids() {
                assert!((id as usize) < model.pieces.len(), "id {id} is no piece");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// eval/gold.rs: gold sets and prediction files, then pairing them

pub fn check_gold(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let format = if selector & 1 == 0 {
        GoldFormat::Jsonl
    } else {
        GoldFormat::CheckThat
    };
    let (gold_bytes, pred_bytes) = split_nul(rest);
    let gold_text = String::from_utf8_lossy(gold_bytes);
    let pred_text = String::from_utf8_lossy(pred_bytes);
    let (gold_path, pred_path) = (Path::new("fuzz/gold.jsonl"), Path::new("fuzz/pred.jsonl"));
    let lines = |t: &str| t.lines().count();

    let gold = parse_gold_str(&gold_text, gold_path, format);
    assert_eq!(
        format!("{gold:?}"),
        format!("{:?}", parse_gold_str(&gold_text, gold_path, format)),
        "gold parsing is not deterministic"
    );
    match &gold {
        Ok(items) => {
            assert!(items.len() <= lines(&gold_text));
            let mut ids = HashSet::new();
            for g in items {
                assert!(ids.insert(g.id.clone()), "duplicate id {:?}", g.id);
                assert_ne!(g.alt.as_ref(), Some(&g.label));
                if let Some((s, e)) = g.span() {
                    assert!(s <= e, "span {s}..{e}");
                }
            }
            if format == GoldFormat::Jsonl {
                // Written back out, the items read back the same.
                let again: String = items
                    .iter()
                    .map(|g| serde_json::to_string(g).unwrap() + "\n")
                    .collect();
                let back: Vec<GoldItem> = parse_gold_str(&again, gold_path, format).unwrap();
                assert_eq!(&back, items);
            }
        }
        Err(e) => assert_names(e, "fuzz/gold.jsonl"),
    }
    let preds = parse_predictions_str(&pred_text, pred_path, format);
    match &preds {
        Ok(p) => {
            assert!(p.len() <= lines(&pred_text));
            if format == GoldFormat::Jsonl {
                assert!(p.iter().all(|p| p.span.is_some() && p.scores.is_some()));
            }
        }
        Err(e) => assert_names(e, "fuzz/pred.jsonl"),
    }
    if let (Ok(gold), Ok(preds)) = (gold, preds) {
        match match_predictions(&gold, &preds, pred_path) {
            Ok(m) => {
                assert_eq!(m.pairs.len() + m.missing.len(), gold.len());
                assert!(m.extra <= preds.len() && !m.pairs.is_empty());
            }
            Err(e) => assert_names(&e, "fuzz/pred.jsonl"),
        }
    }
}

// ---------------------------------------------------------------------------
// model/registry.rs

pub fn check_registry(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Registry::parse(&text) {
        Ok(r) => {
            assert_eq!(r.entries.iter().filter(|e| e.default).count(), 1);
            assert!(r.default_entry().is_some());
            for e in &r.entries {
                let found = r.get(&e.id).expect("every entry is found by its id");
                assert!(found.id.eq_ignore_ascii_case(&e.id));
                let profile = e.profile("0123456789abcdef0123456789abcdef01234567");
                assert_eq!(profile.id, e.id);
            }
        }
        Err(e) => assert_names(&e, "models/registry.toml"),
    }
}

// ---------------------------------------------------------------------------
// hub/listing.rs

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn check_hub_listing(data: &[u8]) {
    let body = String::from_utf8_lossy(data);
    let url = "http://127.0.0.1:9/api/models/fuzz/x/revision/main";
    let listing = match parse_listing(&body, url) {
        Ok(l) => l,
        Err(e) => return assert_names(&e, url),
    };
    assert!(
        listing.sha.len() == 40 && listing.sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "the commit {:?} would not be a safe snapshot directory",
        listing.sha
    );
    for s in &listing.siblings {
        // Hashes become blob file names: plain lowercase hex, never a path.
        match s.expected() {
            Expected::Sha256 { hex, .. } => assert!(is_lower_hex(&hex, 64), "{hex:?}"),
            Expected::GitBlob { hex, .. } => assert!(is_lower_hex(&hex, 40), "{hex:?}"),
            Expected::Nothing => {}
        }
    }
    let names: Vec<String> = listing
        .siblings
        .iter()
        .map(|s| s.rfilename.clone())
        .collect();
    match choose_files(&names) {
        Ok(chosen) => {
            assert!(chosen.iter().all(|c| names.contains(c)));
            let unique: HashSet<&String> = chosen.iter().collect();
            assert_eq!(unique.len(), chosen.len(), "a file chosen twice");
            assert_eq!(chosen[0], "config.json");
            // Chosen names are fixed ones: never a path out of the snapshot.
            assert!(chosen.iter().all(|c| !c.contains('/') && !c.contains("..")));
        }
        Err(missing) => assert!(!missing.is_empty()),
    }
}

/// A fuzz target's name and its check.
pub type Check = (&'static str, fn(&[u8]));

/// Every check, by the name of its fuzz target.
pub const CHECKS: &[Check] = &[
    ("segment", check_segment),
    ("preprocess", check_preprocess),
    ("tokenizer_json", check_tokenizer_json),
    ("unigram", check_unigram),
    ("safetensors", check_safetensors),
    ("e5s1", check_e5s1),
    ("gold", check_gold),
    ("registry", check_registry),
    ("hub_listing", check_hub_listing),
];
