//! The fuzz targets' checks (common/properties.rs), run by `cargo test` on
//! the committed seed corpora (fuzz/seeds/<target>/) and on every input a
//! fuzz campaign failed on (fuzz/regressions/<target>/), plus the generator
//! of the seeds that are not plain project files.
//!
//! `MAWQIF_WRITE_FUZZ_SEEDS=1 cargo test generated_fuzz_seeds` rewrites
//! fuzz/seeds/ (scripts/fuzz/make-seeds.sh does that).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use mawqif::eval::gold::{read_gold, GoldFormat};
use mawqif::label::Scores;
use mawqif::report::LabelledUnit;
use mawqif::text::Segment;

use crate::common::e5s1_file::{e5s1_bytes, E5s1Spec};
use crate::common::properties::CHECKS;

fn check_of(target: &str) -> fn(&[u8]) {
    CHECKS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .unwrap_or_else(|| panic!("no check for fuzz target {target}"))
}

/// Files of `root/<target>/`, for every target that has a folder there.
fn inputs_under(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for target in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = target.file_name().into_string().unwrap();
        for file in std::fs::read_dir(target.path()).unwrap().flatten() {
            out.push((name.clone(), file.path()));
        }
    }
    out.sort();
    out
}

#[test]
fn seeds_and_fuzz_findings_pass_every_check() {
    let seeds = inputs_under(Path::new("fuzz/seeds"));
    // Each target has a seed corpus to start from.
    for (target, _) in CHECKS {
        assert!(
            seeds.iter().any(|(t, _)| t == target),
            "no seeds for the fuzz target {target}"
        );
    }
    let findings = inputs_under(Path::new("fuzz/regressions"));
    for (target, path) in seeds.iter().chain(&findings) {
        let bytes = std::fs::read(path).unwrap();
        let check = check_of(target);
        if let Err(panic) = std::panic::catch_unwind(|| check(&bytes)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{} fails the {target} check: {why}", path.display());
        }
    }
    eprintln!(
        "{} seed inputs and {} fuzz findings replayed",
        seeds.len(),
        findings.len()
    );
}

/// The seed files that are made, not copied: binary formats, and inputs
/// that the targets split in two (at a NUL byte) or select with a first byte.
fn generated_seeds() -> BTreeMap<String, Vec<u8>> {
    let mut seeds = BTreeMap::new();
    let mut put = |target: &str, name: &str, bytes: Vec<u8>| {
        seeds.insert(format!("{target}/{name}"), bytes);
    };
    let tmp = tempfile::tempdir().unwrap();
    let article = crate::common::article();
    let first_paragraph = article.lines().take(3).collect::<Vec<_>>().join("\n");

    // Plain project texts.
    put("segment", "article.txt", article.clone().into_bytes());
    for t in ["a01", "b02", "c03"] {
        let text = std::fs::read(format!("eval/train/texts/{t}.txt")).unwrap();
        put("segment", &format!("{t}.txt"), text);
    }
    put(
        "segment",
        "edges.txt",
        "\u{feff}  عنوان  \r\nقال: «لن نتراجع. أبدا». ثم غادر… د. أحمد 5.6%؟!\n\n---\nليبيا 24\n"
            .as_bytes()
            .to_vec(),
    );
    let parity = std::fs::read_to_string("scripts/arabert-parity/strings.txt").unwrap();
    for (k, line) in parity.lines().filter(|l| !l.is_empty()).take(6).enumerate() {
        put(
            "preprocess",
            &format!("arabert-{k}.txt"),
            line.as_bytes().to_vec(),
        );
    }
    put(
        "preprocess",
        "paragraph.txt",
        first_paragraph.clone().into_bytes(),
    );
    put(
        "registry",
        "registry.toml",
        std::fs::read("models/registry.toml").unwrap(),
    );

    // Gold and predictions: a selector byte (0 JSONL, 1 CheckThat TSV), the
    // gold text, NUL, the predictions.
    let gold_path = Path::new("eval/train/gold/a01.gold.jsonl");
    let gold_text = std::fs::read_to_string(gold_path).unwrap();
    let gold = read_gold(gold_path, GoldFormat::Jsonl).unwrap();
    let predictions: String = gold
        .iter()
        .enumerate()
        .map(|(k, g)| {
            let (start, end) = g.span().unwrap();
            let segment = Segment {
                index: k,
                start,
                end,
                text: g.text.clone(),
            };
            let scores = Scores::from_logits(
                &mawqif::LabelSet::stance(),
                &[k as f32 % 3.0, 1.0, 0.5, 0.0],
            );
            serde_json::to_string(&LabelledUnit::new("a01.txt", &segment, scores)).unwrap() + "\n"
        })
        .collect();
    put(
        "gold",
        "a01-jsonl",
        [
            &[0u8][..],
            gold_text.as_bytes(),
            &[0],
            predictions.as_bytes(),
        ]
        .concat(),
    );
    let tsv: String = std::iter::once("sentence_id\tsentence\tlabel\n".to_string())
        .chain(
            gold.iter()
                .map(|g| format!("{}\t{}\t{}\n", g.id, g.text, g.label)),
        )
        .collect();
    put(
        "gold",
        "a01-checkthat",
        [&[1u8][..], tsv.as_bytes(), &[0], tsv.as_bytes()].concat(),
    );

    // E5S1 files, and what importing one writes.
    let small = E5s1Spec::from_text(&first_paragraph, 8, 1, 3);
    let bigger = E5s1Spec::from_text(&first_paragraph, 32, 2, 4);
    put("e5s1", "small.bin", e5s1_bytes(&small));
    put("e5s1", "hidden32.bin", e5s1_bytes(&bigger));
    let bin = tmp.path().join("small.bin");
    std::fs::write(&bin, e5s1_bytes(&small)).unwrap();
    let imported = tmp.path().join("imported");
    mawqif::model::e5s1::import(&bin, &imported).unwrap();
    put(
        "safetensors",
        "imported-model.safetensors",
        std::fs::read(imported.join("model.safetensors")).unwrap(),
    );

    // Tokenizers: tokenizer.json, NUL, lines to encode. The imported one
    // without its 240 KB charsmap (a seed that size slows every run), and a
    // WordPiece one through `tokenizers`' own loader.
    let texts = first_paragraph.as_bytes();
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(imported.join("tokenizer.json")).unwrap()).unwrap();
    json["normalizer"] = serde_json::Value::Null;
    put(
        "tokenizer_json",
        "unigram.json",
        [json.to_string().as_bytes(), &[0], texts].concat(),
    );
    // The same with a small Precompiled normalizer: a 512-unit trie that
    // maps "a" to "b" (see check_charsmap in src/tokenize/mod.rs).
    let mut trie = vec![0u32; 512];
    trie[0x61] = (0x100 << 10) | (1 << 8) | 0x61;
    let mut charsmap = 2048u32.to_le_bytes().to_vec();
    charsmap.extend(trie.iter().flat_map(|u| u.to_le_bytes()));
    charsmap.extend_from_slice(b"b\0");
    use base64::Engine as _;
    json["normalizer"] = serde_json::json!({
        "type": "Precompiled",
        "precompiled_charsmap": base64::engine::general_purpose::STANDARD.encode(&charsmap),
    });
    put(
        "tokenizer_json",
        "precompiled.json",
        [
            json.to_string().as_bytes(),
            &[0],
            b"a ab ba",
            &[0x0a],
            texts,
        ]
        .concat(),
    );
    let vocab = tmp.path().join("vocab.txt");
    let words: Vec<&str> = first_paragraph.split_whitespace().collect();
    let mut vocab_lines = vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]", "##ا", "##ل"];
    vocab_lines.extend(words.iter().take(40));
    std::fs::write(&vocab, vocab_lines.join("\n")).unwrap();
    let mut wordpiece = mawqif::tokenize::wordpiece_from_vocab(&vocab).unwrap();
    put(
        "tokenizer_json",
        "wordpiece.json",
        [wordpiece.to_string(false).unwrap().as_bytes(), &[0], texts].concat(),
    );
    // Some hub tokenizer.json files come with padding and truncation set.
    wordpiece.with_padding(Some(tokenizers::PaddingParams {
        strategy: tokenizers::PaddingStrategy::Fixed(16),
        ..Default::default()
    }));
    wordpiece
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: 24,
            ..Default::default()
        }))
        .unwrap();
    put(
        "tokenizer_json",
        "wordpiece-padded.json",
        [wordpiece.to_string(false).unwrap().as_bytes(), &[0], texts].concat(),
    );

    // Safetensors: a head, a fine-tuned override with a low-rank update, and
    // the dtypes the reader knows.
    let head_dir = tmp.path().join("head");
    crate::common::tiny_head().save(&head_dir).unwrap();
    put(
        "safetensors",
        "head.safetensors",
        std::fs::read(head_dir.join("head.safetensors")).unwrap(),
    );
    let dev = Device::Cpu;
    let f = |v: &[f32], shape: &[usize]| Tensor::from_slice(v, shape, &dev).unwrap();
    let lora: HashMap<String, Tensor> = [
        (
            "l.weight".to_string(),
            f(&[1., 0., 0., 1., 2., 2.], &[3, 2]),
        ),
        (
            "l.lora_a".to_string(),
            f(&[1., -1.], &[1, 2]).to_dtype(DType::F16).unwrap(),
        ),
        (
            "l.lora_b".to_string(),
            f(&[1., 2., 3.], &[3, 1]).to_dtype(DType::F16).unwrap(),
        ),
        (
            "l.bias".to_string(),
            f(&[0.5, 0.25, 0.125], &[3]).to_dtype(DType::BF16).unwrap(),
        ),
        (
            "ids".to_string(),
            Tensor::from_slice(&[1u32, 2, 3], 3, &dev).unwrap(),
        ),
        (
            "mask".to_string(),
            Tensor::from_slice(&[0u8, 1], 2, &dev).unwrap(),
        ),
    ]
    .into();
    let lora_path = tmp.path().join("lora.safetensors");
    candle_core::safetensors::save(&lora, &lora_path).unwrap();
    put(
        "safetensors",
        "lora.safetensors",
        std::fs::read(&lora_path).unwrap(),
    );

    // A hub listing as `GET /api/models/{id}/revision/{rev}?blobs=true` gives it.
    let listing = serde_json::json!({
        "_id": "0", "id": "tiny/test-bert", "modelId": "tiny/test-bert",
        "sha": "1111111111111111111111111111111111111111", "private": false,
        "siblings": [
            {"rfilename": "README.md", "blobId": "ce013625030ba8dba906f756967f9e9ca394464a", "size": 6},
            {"rfilename": "config.json", "blobId": "0123456789abcdef0123456789abcdef01234567", "size": 412},
            {"rfilename": "vocab.txt", "blobId": "89abcdef0123456789abcdef0123456789abcdef", "size": 3030},
            {"rfilename": "model.safetensors", "blobId": "fedcba9876543210fedcba9876543210fedcba98",
             "size": 134, "lfs": {"sha256": "5".repeat(64), "size": 148044, "pointerSize": 134}}
        ]
    });
    put("hub_listing", "tiny.json", listing.to_string().into_bytes());
    let mut bare = listing.clone();
    bare["siblings"] = serde_json::json!([{"rfilename": "config.json"}, {"rfilename": "tokenizer.json"}, {"rfilename": "pytorch_model.bin"}]);
    put(
        "hub_listing",
        "no-blobs.json",
        bare.to_string().into_bytes(),
    );

    // The unigram target reads its own little format (see check_unigram).
    put("unigram", "pieces", b"\x08\x01\x00\x10\x02\x01\x02\x20\x01\x03\x08\x03\x01\x02\x03\x30\x02\x06\x07\x18\x01\x09\x04\x02\x0b\x0c\x28\x02\x00\x01\x10\x00\x01\x02\x01\x02\x03\x00\x06\x07\x08\x09\x01\x02".to_vec());
    put("unigram", "arabic", b"\x05\x02\x01\x02\x10\x01\x01\x08\x01\x02\x08\x03\x00\x01\x02\x03\x40\x01\x04\x0c\x03\x00\x01\x02\x01\x02\x01\x02\x03\x04\x05\x00\x0c\x0d".to_vec());
    seeds
}

#[test]
fn generated_fuzz_seeds_load() {
    let seeds = generated_seeds();
    let write = std::env::var_os("MAWQIF_WRITE_FUZZ_SEEDS").is_some();
    for (name, bytes) in &seeds {
        let (target, _) = name.split_once('/').unwrap();
        check_of(target)(bytes);
        if write {
            let path = Path::new("fuzz/seeds").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
        }
    }
    // The loaders' seeds are valid files: fuzzing starts from the inside.
    let path = Path::new("seed");
    for (name, bytes) in &seeds {
        let ok = match name.split_once('/').unwrap().0 {
            "e5s1" => mawqif::model::e5s1::parse(bytes, path).is_ok(),
            "tokenizer_json" => {
                let json = &bytes[..bytes.iter().position(|&b| b == 0).unwrap()];
                let json = std::str::from_utf8(json).unwrap();
                mawqif::tokenize::SentenceTokenizer::from_json(json, path, None, 64).is_ok()
            }
            "safetensors" => {
                let tmp = tempfile::tempdir().unwrap();
                let file = tmp.path().join("x.safetensors");
                std::fs::write(&file, bytes).unwrap();
                mawqif::model::weights::SafetensorsFiles::open(&[&file]).is_ok()
            }
            "hub_listing" => {
                mawqif::hub::listing::parse_listing(std::str::from_utf8(bytes).unwrap(), "seed")
                    .is_ok()
            }
            "registry" => {
                mawqif::model::Registry::parse(std::str::from_utf8(bytes).unwrap()).is_ok()
            }
            _ => true,
        };
        assert!(ok, "the seed {name} does not load");
    }
}
