//! The registry of known encoders (`models/registry.toml`, built into the
//! binary): how to feed and pool each hub model, and which revision to use.

use serde::Deserialize;

use crate::error::{MawqifError, Result};
use crate::text::Preprocessing;

use super::profile::{ModelProfile, Pooling};

/// The registry as shipped.
pub const REGISTRY_TOML: &str = include_str!("../../models/registry.toml");

/// One known encoder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    pub id: String,
    /// The hub model used when `--model` names none and no local model exists.
    #[serde(default)]
    pub default: bool,
    pub revision: String,
    pub pooling: Pooling,
    pub preprocessing: Preprocessing,
    #[serde(default)]
    pub prefix: String,
    pub max_length: usize,
    #[serde(default)]
    pub normalize: bool,
    pub licence: String,
    /// Which tokenizer and weight files the repo has (for people, not code).
    #[serde(default)]
    pub files: String,
    #[serde(default)]
    pub notes: String,
}

impl RegistryEntry {
    /// The profile of this encoder at `commit` (the resolved revision).
    pub fn profile(&self, commit: &str) -> ModelProfile {
        ModelProfile {
            id: self.id.clone(),
            revision: commit.to_string(),
            pooling: self.pooling,
            preprocessing: self.preprocessing,
            prefix: self.prefix.clone(),
            max_length: self.max_length,
            normalize: self.normalize,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    model: Vec<RegistryEntry>,
}

/// Parsed registry entries.
#[derive(Debug, Clone)]
pub struct Registry {
    pub entries: Vec<RegistryEntry>,
}

impl Registry {
    /// Parse registry text; exactly one entry must be the default.
    pub fn parse(text: &str) -> Result<Self> {
        let file: RegistryFile = toml::from_str(text)
            .map_err(|e| MawqifError::malformed("models/registry.toml", e.to_string()))?;
        let defaults = file.model.iter().filter(|m| m.default).count();
        if defaults != 1 {
            return Err(MawqifError::malformed(
                "models/registry.toml",
                format!("exactly one model must have `default = true`, found {defaults}"),
            ));
        }
        Ok(Self {
            entries: file.model,
        })
    }

    /// The registry built into this binary.
    pub fn builtin() -> Self {
        // The file is checked by a unit test, so this cannot fail at run time.
        Self::parse(REGISTRY_TOML).unwrap_or(Self {
            entries: Vec::new(),
        })
    }

    /// The entry for `id`, compared case-insensitively as the hub does.
    pub fn get(&self, id: &str) -> Option<&RegistryEntry> {
        self.entries.iter().find(|e| e.id.eq_ignore_ascii_case(id))
    }

    pub fn default_entry(&self) -> Option<&RegistryEntry> {
        self.entries.iter().find(|e| e.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_registry_parses_and_has_the_required_models() {
        let r = Registry::parse(REGISTRY_TOML).unwrap();
        for id in [
            "aubmindlab/bert-base-arabertv02",
            "CAMeL-Lab/bert-base-arabic-camelbert-msa",
            "UBC-NLP/ARBERT",
            "intfloat/multilingual-e5-small",
        ] {
            assert!(r.get(id).is_some(), "{id} missing");
        }
        let default = r.default_entry().unwrap();
        assert_eq!(default.id, "aubmindlab/bert-base-arabertv02");
        assert_eq!(default.preprocessing, Preprocessing::ArabertV02);
        let e5 = r.get("intfloat/multilingual-e5-small").unwrap();
        assert_eq!(e5.prefix, "query: ");
        assert!(e5.normalize);
    }

    #[test]
    fn registry_needs_one_default() {
        let two = REGISTRY_TOML.replace(
            "id = \"UBC-NLP/ARBERT\"",
            "id = \"UBC-NLP/ARBERT\"\ndefault = true",
        );
        assert_eq!(two.matches("default = true").count(), 2);
        let err = Registry::parse(&two).unwrap_err().to_string();
        assert!(err.contains("found 2"), "{err}");
        let none = REGISTRY_TOML.replace("default = true", "");
        assert!(Registry::parse(&none).is_err());
        let bad = REGISTRY_TOML.replace("pooling = \"mean\"", "pooling = \"max\"");
        assert!(Registry::parse(&bad).is_err());
    }
}
