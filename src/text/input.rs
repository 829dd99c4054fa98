//! Reading user text files with errors that say what is wrong with them.

use std::io::Read;
use std::path::Path;

use crate::error::{MawqifError, Result};

/// Read a UTF-8 text file (`-` is stdin); refuse empty, binary and non-UTF-8 input.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| MawqifError::io(path, e))?;
        buf
    } else {
        std::fs::read(path).map_err(|e| MawqifError::io(path, e))?
    };
    text_from_bytes(path, bytes)
}

pub fn text_from_bytes(path: &Path, bytes: Vec<u8>) -> Result<String> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(MawqifError::EmptyInput {
            path: path.to_path_buf(),
        });
    }
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(MawqifError::BinaryInput {
            path: path.to_path_buf(),
            offset,
        });
    }
    String::from_utf8(bytes).map_err(|e| MawqifError::InvalidUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_bytes_with_offsets() {
        let p = Path::new("x.txt");
        assert!(matches!(
            text_from_bytes(p, b"  \n".to_vec()),
            Err(MawqifError::EmptyInput { .. })
        ));
        assert!(matches!(
            text_from_bytes(p, b"ab\0cd".to_vec()),
            Err(MawqifError::BinaryInput { offset: 2, .. })
        ));
        assert!(matches!(
            text_from_bytes(p, vec![b'a', 0xff, b'b']),
            Err(MawqifError::InvalidUtf8 { offset: 1, .. })
        ));
        assert_eq!(text_from_bytes(p, "نص".as_bytes().to_vec()).unwrap(), "نص");
    }
}
