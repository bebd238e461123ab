//! Named tensors in the safetensors format, written atomically.
//!
//! A safetensors file is an 8-byte little-endian header length, a JSON header (names,
//! dtypes, shapes, byte offsets and an optional string-to-string `__metadata__` map), then
//! the raw little-endian data. PyTorch's `safetensors.torch.save_file(model.state_dict())`
//! writes the same format, so its state dicts load here directly.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::base::{Error, Result};
use crate::tensor::{CpuStorage, DType, Device, Tensor};

/// Named tensors plus string metadata, as stored in one safetensors file.
#[derive(Clone, Debug, Default)]
pub struct TensorFile {
    /// The tensors, in file order on load (sorted by name), in the caller's order on save.
    pub tensors: Vec<(String, Tensor)>,
    /// The `__metadata__` map.
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// The tensor named `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

fn to_st_dtype(d: DType) -> Dtype {
    match d {
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::I64 => Dtype::I64,
    }
}

/// Serialises `file` into safetensors bytes (tensors are copied to the host first).
pub fn encode(file: &TensorFile) -> Result<Vec<u8>> {
    let host: Vec<(String, CpuStorage, Vec<usize>)> = file
        .tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_cpu_storage()?, t.shape().to_vec())))
        .collect::<Result<_>>()?;
    let views: Vec<(String, TensorView<'_>)> = host
        .iter()
        .map(|(n, s, shape)| {
            TensorView::new(to_st_dtype(s.dtype()), shape.clone(), s.as_bytes())
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::invalid("save", format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let meta = (!file.metadata.is_empty()).then(|| file.metadata.clone());
    safetensors::tensor::serialize(views, meta).map_err(|e| Error::invalid("save", e.to_string()))
}

/// Parses safetensors bytes into CPU tensors; `path` only names the source in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<TensorFile> {
    let bad = |msg: String| Error::Format {
        path: path.display().to_string(),
        msg,
    };
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let mut tensors = Vec::with_capacity(st.len());
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    for name in names {
        let view = st
            .tensor(name)
            .map_err(|e| bad(format!("tensor {name}: {e}")))?;
        let data = view.data();
        let storage = match view.dtype() {
            Dtype::F16 => CpuStorage::F16(
                data.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            Dtype::BF16 => CpuStorage::BF16(
                data.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            Dtype::F32 => CpuStorage::F32(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            Dtype::F64 => CpuStorage::F64(
                data.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            Dtype::I64 => CpuStorage::I64(
                data.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            other => {
                return Err(bad(format!(
                    "tensor {name}: dtype {other:?} is not supported (f16, bf16, f32, f64, i64 are)"
                )))
            }
        };
        tensors.push((
            name.to_string(),
            Tensor::from_cpu_storage(storage, view.shape(), Device::Cpu)?,
        ));
    }
    Ok(TensorFile {
        tensors,
        metadata: header.metadata().clone().unwrap_or_default(),
    })
}

/// Reads a safetensors file into CPU tensors.
pub fn load(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(&bytes, path)
}

/// Writes `file` to `path` atomically (see [`super::write_atomic`]: a symlink is
/// written through, a crash leaves the old file or the new one).
pub fn save(path: &Path, file: &TensorFile) -> Result<()> {
    let bytes = encode(file)?;
    super::write_atomic(path, &bytes)
}
