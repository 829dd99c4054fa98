//! `mawqif import-e5s1`.

use std::path::Path;

use anyhow::{Context as _, Result};

pub fn import_e5s1(file: &Path, out: &Path) -> Result<()> {
    let summary = mawqif::model::e5s1::import(file, out)
        .with_context(|| format!("importing {}", file.display()))?;
    eprintln!("{summary}");
    Ok(())
}
