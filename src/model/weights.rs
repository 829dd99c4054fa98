//! Reading safetensors weights tensor by tensor.
//!
//! Contract: [`SafetensorsFiles`] is a candle `VarBuilder` backend over one or
//! more safetensors files; a name present in several files is taken from the
//! last one (how fine-tuned layers are layered over a base model). Each tensor
//! is read from disk when the model asks for it, straight into its own
//! buffer: unlike a memory map, the file's pages never count towards the
//! process's memory on top of the loaded tensors.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use crate::error::{MawqifError, Result};

struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

pub struct SafetensorsFiles {
    files: Vec<(PathBuf, Mutex<std::fs::File>)>,
    entries: HashMap<String, Entry>,
}

fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "U8" => DType::U8,
        "U32" => DType::U32,
        "I64" => DType::I64,
        _ => return None,
    })
}

impl SafetensorsFiles {
    /// Index the headers of `paths`; truncated or foreign files are refused here,
    /// with the file named.
    pub fn open(paths: &[&Path]) -> Result<Self> {
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (index, &path) in paths.iter().enumerate() {
            let mut file = std::fs::File::open(path).map_err(|e| MawqifError::io(path, e))?;
            let file_len = file.metadata().map_err(|e| MawqifError::io(path, e))?.len();
            let mut len_bytes = [0u8; 8];
            file.read_exact(&mut len_bytes)
                .map_err(|_| MawqifError::malformed(path, "shorter than a safetensors header"))?;
            let header_len = u64::from_le_bytes(len_bytes);
            if header_len == 0
                || header_len > file_len.saturating_sub(8)
                || header_len > 100_000_000
            {
                return Err(MawqifError::malformed(
                    path,
                    "not a safetensors file (bad header length); re-download or re-import it",
                ));
            }
            let mut header = vec![0u8; header_len as usize];
            file.read_exact(&mut header)
                .map_err(|e| MawqifError::io(path, e))?;
            let header: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
                MawqifError::malformed(path, format!("safetensors header is not JSON: {e}"))
            })?;
            let data_start = 8 + header_len;
            let data_len = file_len - data_start;
            let map = header.as_object().ok_or_else(|| {
                MawqifError::malformed(path, "safetensors header is not an object")
            })?;
            for (name, info) in map {
                if name == "__metadata__" {
                    continue;
                }
                let bad = |why: &str| MawqifError::malformed(path, format!("tensor {name}: {why}"));
                let dtype = info
                    .get("dtype")
                    .and_then(|d| d.as_str())
                    .and_then(dtype_of)
                    .ok_or_else(|| bad("unsupported or missing dtype"))?;
                let shape: Vec<usize> = info
                    .get("shape")
                    .and_then(|s| s.as_array())
                    .ok_or_else(|| bad("no shape"))?
                    .iter()
                    .map(|d| d.as_u64().map(|d| d as usize))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("bad shape"))?;
                let offsets = info
                    .get("data_offsets")
                    .and_then(|o| o.as_array())
                    .filter(|o| o.len() == 2)
                    .ok_or_else(|| bad("no data_offsets"))?;
                let (s, e) = match (offsets[0].as_u64(), offsets[1].as_u64()) {
                    (Some(s), Some(e)) if s <= e => (s, e),
                    _ => return Err(bad("bad data_offsets")),
                };
                if e > data_len {
                    return Err(bad(&format!(
                        "truncated: it ends at byte {e} of the data but the file holds {data_len}; re-download or re-import it"
                    )));
                }
                // Checked: a shape whose product wraps could otherwise match a
                // small byte range and describe a tensor far larger than the file.
                let expected_bytes = shape
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d))
                    .and_then(|n| n.checked_mul(dtype.size_in_bytes()));
                if expected_bytes != usize::try_from(e - s).ok() {
                    return Err(bad("byte length does not match its shape"));
                }
                entries.insert(
                    name.clone(),
                    Entry {
                        file: index,
                        dtype,
                        shape,
                        start: data_start + s,
                        end: data_start + e,
                    },
                );
            }
            files.push((path.to_path_buf(), Mutex::new(file)));
        }
        Ok(Self { files, entries })
    }

    /// Names of the tensors indexed, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The stored shape of a tensor.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// A tensor by name; a weight with `.lora_a`/`.lora_b` beside it (a
    /// fine-tuned low-rank update) comes back as `weight + lora_b · lora_a`.
    fn read(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.read_stored(name, dtype, dev)?;
        let Some(base) = name.strip_suffix(".weight") else {
            return Ok(t);
        };
        let (a, b) = (format!("{base}.lora_a"), format!("{base}.lora_b"));
        if !(self.entries.contains_key(&a) && self.entries.contains_key(&b)) {
            return Ok(t);
        }
        let a = self.read_stored(&a, DType::F32, dev)?;
        let b = self.read_stored(&b, DType::F32, dev)?;
        (t.to_dtype(DType::F32)? + b.matmul(&a)?)?.to_dtype(dtype)
    }

    fn read_stored(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let entry = self.entries.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()
        })?;
        let (path, file) = &self.files[entry.file];
        let mut f = file.lock().map_err(|_| {
            candle_core::Error::Msg(format!("{} is in use elsewhere", path.display()))
        })?;
        f.seek(SeekFrom::Start(entry.start))?;
        let len = (entry.end - entry.start) as usize;
        let t = if entry.dtype == DType::F32 {
            // Read straight into the tensor's buffer, so a large matrix is
            // never held twice (raw bytes and floats) while loading.
            Tensor::from_vec(read_f32_le(&mut *f, len)?, entry.shape.as_slice(), dev)?
        } else {
            let mut bytes = vec![0u8; len];
            f.read_exact(&mut bytes)?;
            Tensor::from_raw_buffer(&bytes, entry.dtype, &entry.shape, dev)?
        };
        t.to_dtype(dtype)
    }
}

impl SafetensorsFiles {
    /// The first of `names` that exists, read as f16 with its shape: an f32
    /// tensor is converted in 1 MiB pieces, so it is never held in f32.
    pub fn read_f16(&self, names: &[&str]) -> Result<Option<(Vec<usize>, Vec<half::f16>)>> {
        let Some((name, entry)) = names
            .iter()
            .find_map(|n| self.entries.get(*n).map(|e| (*n, e)))
        else {
            return Ok(None);
        };
        let (path, file) = &self.files[entry.file];
        let io = |e: std::io::Error| MawqifError::io(path, e);
        let mut f = file
            .lock()
            .map_err(|_| MawqifError::malformed(path, "file handle poisoned"))?;
        f.seek(SeekFrom::Start(entry.start)).map_err(io)?;
        let elems: usize = entry.shape.iter().product();
        let mut out = Vec::with_capacity(elems);
        let width = entry.dtype.size_in_bytes();
        let mut buf = vec![0u8; (1 << 20) / width * width];
        let mut left = elems * width;
        while left > 0 {
            let take = left.min(buf.len());
            let chunk = &mut buf[..take];
            f.read_exact(chunk).map_err(io)?;
            left -= chunk.len();
            match entry.dtype {
                DType::F32 => out.extend(
                    chunk
                        .chunks_exact(4)
                        .map(|b| half::f16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
                ),
                DType::F16 => out.extend(
                    chunk
                        .chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]])),
                ),
                DType::BF16 => out.extend(chunk.chunks_exact(2).map(|b| {
                    half::f16::from_f32(half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                })),
                other => {
                    return Err(MawqifError::malformed(
                        path,
                        format!("tensor {name} is {other:?}, not a float type"),
                    ))
                }
            }
        }
        Ok(Some((entry.shape.clone(), out)))
    }
}

/// `len` bytes of little-endian f32 from `r`.
fn read_f32_le(r: &mut impl Read, len: usize) -> std::io::Result<Vec<f32>> {
    let n = len / 4;
    let mut values = vec![0f32; n];
    if cfg!(target_endian = "little") {
        // On a little-endian target the file's byte order is the in-memory
        // order: read straight into the floats, with no second buffer.
        r.read_exact(bytemuck::cast_slice_mut::<f32, u8>(&mut values))?;
    } else {
        let mut chunk = [0u8; 4];
        for v in &mut values {
            r.read_exact(&mut chunk)?;
            *v = f32::from_le_bytes(chunk);
        }
    }
    Ok(values)
}

impl SimpleBackend for SafetensorsFiles {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some(entry) = self.entries.get(name) {
            if entry.shape.as_slice() != s.dims() {
                return Err(candle_core::Error::UnexpectedShape {
                    msg: format!("shape mismatch for {name}"),
                    expected: s,
                    got: entry.shape.clone().into(),
                }
                .bt());
            }
        }
        self.read(name, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.read(name, dtype, dev)
    }

    /// A tensor, or a prefix of tensor names (`bert` for `bert.embeddings…`),
    /// which is how BERT loaders detect prefixed checkpoints.
    fn contains_tensor(&self, name: &str) -> bool {
        self.entries.contains_key(name) || {
            let prefix = format!("{name}.");
            self.entries.keys().any(|k| k.starts_with(&prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A safetensors file with this header and data, in a temp dir.
    fn raw_file(header: &str, data: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    fn open_err(header: &str, data: &[u8]) -> String {
        let (_dir, path) = raw_file(header, data);
        let err = SafetensorsFiles::open(&[&path]).err().unwrap().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        err
    }

    #[test]
    fn a_header_claiming_100_gb_is_refused_before_reading() {
        let err = open_err(
            r#"{"w":{"dtype":"F32","shape":[25000000000],"data_offsets":[0,100000000000]}}"#,
            &[0; 16],
        );
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn a_shape_whose_size_overflows_is_refused() {
        // 2^62 x 4 elements: the product wraps to 0 and matched the empty
        // byte range before the multiplication was checked.
        let err = open_err(
            r#"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}}"#,
            &[],
        );
        assert!(err.contains("does not match its shape"), "{err}");
        let err = open_err(
            r#"{"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}"#,
            &[],
        );
        assert!(err.contains("does not match its shape"), "{err}");
    }

    #[test]
    fn later_files_win_and_prefixes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b.safetensors"),
        );
        let t = |v: &[f32]| Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap();
        let base: HashMap<String, Tensor> = [
            ("bert.x".to_string(), t(&[1.0, 2.0])),
            ("bert.y".to_string(), t(&[3.0])),
        ]
        .into();
        candle_core::safetensors::save(&base, &a).unwrap();
        let over: HashMap<String, Tensor> = [("bert.x".to_string(), t(&[9.0, 8.0]))].into();
        candle_core::safetensors::save(&over, &b).unwrap();
        let files = SafetensorsFiles::open(&[&a, &b]).unwrap();
        let read = |n: &str| {
            files
                .get(
                    Shape::from(files.entries[n].shape.clone()),
                    n,
                    candle_nn::Init::Const(0.),
                    DType::F32,
                    &Device::Cpu,
                )
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(read("bert.x"), vec![9.0, 8.0]);
        assert_eq!(read("bert.y"), vec![3.0]);
        assert!(files.contains_tensor("bert") && !files.contains_tensor("ber"));
        assert!(files
            .get(
                Shape::from(3),
                "bert.x",
                candle_nn::Init::Const(0.),
                DType::F32,
                &Device::Cpu
            )
            .is_err());
    }

    #[test]
    fn low_rank_updates_are_added_to_their_weight() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b.safetensors"),
        );
        let dev = Device::Cpu;
        let base: HashMap<String, Tensor> = [(
            "l.weight".to_string(),
            Tensor::from_slice(&[1f32, 0.0, 0.0, 1.0, 2.0, 2.0], (3, 2), &dev).unwrap(),
        )]
        .into();
        candle_core::safetensors::save(&base, &a).unwrap();
        // B·A = [1,2,3]ᵀ · [1,-1] (rank 1), stored in f16 as the trainer does.
        let over: HashMap<String, Tensor> = [
            (
                "l.lora_a".to_string(),
                Tensor::from_slice(&[1f32, -1.0], (1, 2), &dev)
                    .unwrap()
                    .to_dtype(DType::F16)
                    .unwrap(),
            ),
            (
                "l.lora_b".to_string(),
                Tensor::from_slice(&[1f32, 2.0, 3.0], (3, 1), &dev)
                    .unwrap()
                    .to_dtype(DType::F16)
                    .unwrap(),
            ),
        ]
        .into();
        candle_core::safetensors::save(&over, &b).unwrap();
        let merged = SafetensorsFiles::open(&[&a, &b])
            .unwrap()
            .get(
                Shape::from((3, 2)),
                "l.weight",
                candle_nn::Init::Const(0.),
                DType::F32,
                &dev,
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(merged, vec![2.0, -1.0, 2.0, -1.0, 5.0, -1.0]);
        // Without the update file the weight is the base one.
        let plain = SafetensorsFiles::open(&[&a])
            .unwrap()
            .get(
                Shape::from((3, 2)),
                "l.weight",
                candle_nn::Init::Const(0.),
                DType::F32,
                &dev,
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(plain, vec![1.0, 0.0, 0.0, 1.0, 2.0, 2.0]);
    }
}
