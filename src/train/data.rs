//! Labelled training sentences: loading gold files (never the held-out
//! evaluation fixtures), and splitting them by text for dev sets and
//! cross-validation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{MawqifError, Result};
use crate::eval::gold::{document_of, read_checkthat_gold};
use crate::eval::{read_gold, GoldFormat, GoldItem};
use crate::label::{Label, LabelSet};

/// A labelled sentence and the text (document) it came from.
#[derive(Debug, Clone)]
pub struct Example {
    pub doc: String,
    pub text: String,
    /// The unit before this one in its text.
    pub previous: Option<String>,
    pub label: Label,
    pub alt: Option<Label>,
}

impl Example {
    /// Whether `before` is this example's previous unit (same text, and the
    /// unit `previous` names).
    pub fn follows(&self, before: &Example) -> bool {
        self.doc == before.doc && self.previous.as_deref() == Some(before.text.as_str())
    }
}

/// Refuse held-out evaluation data, however the path is spelled.
pub fn check_not_eval_fixture(path: &Path) -> Result<()> {
    let full = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let parts: Vec<String> = full
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .windows(2)
        .any(|w| w[0] == "eval" && w[1] == "fixtures")
    {
        return Err(MawqifError::EvalFixtureInTraining {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The labels a head learns from `examples`: `given` (every example's label
/// must be in it), or the labels found ([`LabelSet::covering`]).
pub fn label_set(examples: &[Example], given: Option<&LabelSet>) -> Result<LabelSet> {
    match given {
        Some(set) => {
            if let Some(e) = examples.iter().find(|e| !set.contains(&e.label)) {
                return Err(MawqifError::BadLabelSet(format!(
                    "the training data has label {:?}, which --labels {} leaves out",
                    e.label.as_str(),
                    set.labels()
                        .iter()
                        .map(|l| l.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )));
            }
            Ok(set.clone())
        }
        None => LabelSet::covering(examples.iter().map(|e| &e.label)),
    }
}

/// The gold files `paths` name: files as given, and every `*.jsonl` and
/// `*.tsv` in directories (sorted). Refuses the evaluation fixtures.
pub fn gold_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        check_not_eval_fixture(p)?;
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| MawqifError::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "jsonl" || x == "tsv"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(MawqifError::NoGoldFiles { path: p.clone() });
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Load gold files: JSONL (one text per file), CheckThat! TSV (`*.tsv`,
/// texts from the sentence ids), or every such file in directories (sorted).
pub fn load_examples(paths: &[PathBuf]) -> Result<Vec<Example>> {
    let files = gold_files(paths)?;
    let mut examples = Vec::new();
    for f in &files {
        check_not_eval_fixture(f)?;
        let doc = f
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(".gold.jsonl")
                    .to_string()
            })
            .unwrap_or_default();
        if f.extension().is_some_and(|x| x == "tsv") {
            // Each id's text (`doc-NN` → `doc`; else the sentence alone).
            let mut previous: Option<(String, String)> = None;
            for GoldItem {
                id,
                text,
                label,
                alt,
                ..
            } in read_checkthat_gold(f, false)?
            {
                let text_doc = format!("{doc}:{}", document_of(&id));
                let before = previous
                    .replace((text_doc.clone(), text.clone()))
                    .filter(|(d, _)| *d == text_doc)
                    .map(|(_, t)| t);
                examples.push(Example {
                    doc: text_doc,
                    previous: before,
                    text,
                    label,
                    alt,
                });
            }
            continue;
        }
        let mut previous = None;
        for GoldItem {
            text, label, alt, ..
        } in read_gold(f, GoldFormat::Jsonl)?
        {
            examples.push(Example {
                doc: doc.clone(),
                previous: previous.replace(text.clone()),
                text,
                label,
                alt,
            });
        }
    }
    Ok(examples)
}

/// Split documents into train and dev by a seeded hash of their names, so a
/// text never straddles the split and the split does not depend on file order.
pub fn split_by_doc(
    examples: &[Example],
    dev_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut docs: Vec<&str> = examples.iter().map(|e| e.doc.as_str()).collect();
    docs.sort();
    docs.dedup();
    let mut keyed: Vec<(u64, &str)> = docs.iter().map(|d| (doc_key(d, seed), *d)).collect();
    keyed.sort();
    let n_dev = ((docs.len() as f64) * dev_fraction).round() as usize;
    let dev_docs: std::collections::HashSet<&str> =
        keyed.iter().take(n_dev).map(|(_, d)| *d).collect();
    let (mut train, mut dev) = (Vec::new(), Vec::new());
    for (k, e) in examples.iter().enumerate() {
        if dev_docs.contains(e.doc.as_str()) {
            dev.push(k);
        } else {
            train.push(k);
        }
    }
    (train, dev)
}

fn doc_key(doc: &str, seed: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(doc.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// K folds of whole documents (seeded), for cross-validation by text.
pub fn folds_by_doc(examples: &[Example], k: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut docs: Vec<&str> = examples.iter().map(|e| e.doc.as_str()).collect();
    docs.sort();
    docs.dedup();
    let mut keyed: Vec<(u64, &str)> = docs.iter().map(|d| (doc_key(d, seed), *d)).collect();
    keyed.sort();
    let fold_of: HashMap<&str, usize> = keyed
        .iter()
        .enumerate()
        .map(|(i, (_, d))| (*d, i % k))
        .collect();
    let mut folds = vec![Vec::new(); k];
    for (i, e) in examples.iter().enumerate() {
        folds[fold_of[e.doc.as_str()]].push(i);
    }
    folds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_eval_fixtures() {
        let err = load_examples(&[PathBuf::from("eval/fixtures/article.gold.jsonl")]).unwrap_err();
        assert!(matches!(err, MawqifError::EvalFixtureInTraining { .. }));
        let err = load_examples(&[PathBuf::from("eval/train/../fixtures")]).unwrap_err();
        assert!(matches!(err, MawqifError::EvalFixtureInTraining { .. }));
    }

    #[test]
    fn split_keeps_documents_whole() {
        let ex: Vec<Example> = (0..40)
            .map(|i| Example {
                doc: format!("d{}", i / 4),
                previous: None,
                text: i.to_string(),
                label: crate::label::Stance::Report.label(),
                alt: None,
            })
            .collect();
        let (train, dev) = split_by_doc(&ex, 0.2, 1);
        assert_eq!(dev.len(), 8);
        let dev_docs: std::collections::HashSet<_> = dev.iter().map(|&i| &ex[i].doc).collect();
        assert!(train.iter().all(|&i| !dev_docs.contains(&ex[i].doc)));
        let folds = folds_by_doc(&ex, 5, 1);
        assert_eq!(folds.iter().map(|f| f.len()).sum::<usize>(), 40);
    }
}
