//! The IDX file format of MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! An IDX file is a 4-byte magic number (two zero bytes, an element-type code, the rank),
//! one big-endian `u32` per dimension, then the elements in row-major order. Only unsigned
//! bytes (type code `0x08`), the type of every MNIST-style file, are read here.

use std::path::Path;

use crate::base::{Error, Result};

/// The gzip magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// An n-dimensional array of bytes read from an IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Size of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The elements in row-major order (`dims.iter().product()` of them).
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes, gzip-compressed or raw (detected from the content,
/// not the name), and checks that it has `rank` dimensions when `rank` is given.
///
/// Every problem (missing file, corrupt gzip stream, bad magic, wrong rank, a length that
/// does not match the dimensions) is an [`Error`] naming the path and what was wrong.
pub fn read_idx(path: &Path, rank: Option<usize>) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if raw.starts_with(&GZIP_MAGIC) {
        gunzip(&raw).map_err(|msg| format_error(path, msg))?
    } else {
        raw
    };
    parse_idx(&bytes, rank).map_err(|msg| format_error(path, msg))
}

/// The decompressed bytes of a gzip file (every member of a multi-member file, as
/// `gzip -d` gives them). Decompression stops one byte past the length the IDX header
/// declares, so a small file that inflates without bound (a gzip bomb) costs no more
/// memory than the array it claims to hold; `parse_idx` then reports the trailing bytes.
#[cfg(feature = "gzip")]
fn gunzip(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let corrupt = |e: std::io::Error| format!("corrupt gzip stream: {e}");
    let mut dec = flate2::read::MultiGzDecoder::new(raw);
    let mut out = Vec::new();
    // The magic number, then the dimensions it announces.
    (&mut dec).take(4).read_to_end(&mut out).map_err(corrupt)?;
    if out.len() == 4 {
        let dims = 4 * out[3] as u64;
        (&mut dec)
            .take(dims)
            .read_to_end(&mut out)
            .map_err(corrupt)?;
    }
    let Some(len) = declared_len(&out) else {
        return Ok(out); // a short or malformed header: parse_idx names the problem
    };
    let rest = (len - out.len()) as u64 + 1;
    out.try_reserve(raw.len().saturating_mul(4).min(len + 1 - out.len()))
        .map_err(|_| format!("{len} bytes of data do not fit in memory"))?;
    dec.take(rest).read_to_end(&mut out).map_err(corrupt)?;
    Ok(out)
}

/// The total length (header and data) that a complete IDX header announces, or `None`
/// when `head` is not one or the length overflows.
#[cfg(feature = "gzip")]
fn declared_len(head: &[u8]) -> Option<usize> {
    let rank = *head.get(3)? as usize;
    let header = 4 + 4 * rank;
    let dims = head.get(4..header)?;
    dims.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .try_fold(1usize, |n, d| n.checked_mul(d))?
        .checked_add(header)
}

/// Without the `gzip` feature a compressed file is an error saying so.
#[cfg(not(feature = "gzip"))]
fn gunzip(_: &[u8]) -> std::result::Result<Vec<u8>, String> {
    Err(
        "a gzip-compressed file: gradstep was built without its `gzip` feature \
         (decompress the file, or enable the feature)"
            .into(),
    )
}

/// Parses the bytes of an (uncompressed) IDX file; the error is a message without the path.
pub fn parse_idx(bytes: &[u8], rank: Option<usize>) -> std::result::Result<IdxArray, String> {
    if bytes.len() < 4 {
        return Err(format!(
            "not an IDX file: {} bytes, shorter than the 4-byte header",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "not an IDX file: magic number {:02x}{:02x}{:02x}{:02x} does not start with two zero bytes",
            bytes[0], bytes[1], bytes[2], bytes[3]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x} ({}) is not supported: only unsigned bytes (0x08) are",
            bytes[2],
            type_name(bytes[2])
        ));
    }
    let file_rank = bytes[3] as usize;
    if let Some(want) = rank {
        if file_rank != want {
            return Err(format!(
                "expected an IDX file of rank {want}, found rank {file_rank}"
            ));
        }
    }
    let header = 4 + 4 * file_rank;
    if bytes.len() < header {
        return Err(format!(
            "truncated header: rank {file_rank} needs {header} bytes, the file has {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let numel = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
    let body = bytes.len() - header;
    if body != numel {
        let what = if body < numel {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(format!(
            "{what}: dimensions {dims:?} need {numel} bytes of data, the file has {body}"
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Serialises an array as an uncompressed IDX file of unsigned bytes (for tests and tools).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Result<Vec<u8>> {
    let numel = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if numel != Some(data.len()) || dims.len() > 255 || dims.iter().any(|&d| d > u32::MAX as usize)
    {
        return Err(Error::invalid(
            "encode_idx",
            format!("{} bytes do not fit dimensions {dims:?}", data.len()),
        ));
    }
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "u8",
        0x09 => "i8",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

fn format_error(path: &Path, msg: String) -> Error {
    Error::Format {
        path: path.display().to_string(),
        msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_checks() {
        let bytes = encode_idx(&[2, 3], &[1, 2, 3, 4, 5, 6]).unwrap();
        let a = parse_idx(&bytes, Some(2)).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
        assert!(parse_idx(&bytes, Some(3)).unwrap_err().contains("rank 3"));
        assert!(parse_idx(&bytes[..9], None)
            .unwrap_err()
            .contains("truncated"));
        let mut long = bytes.clone();
        long.push(0);
        assert!(parse_idx(&long, None).unwrap_err().contains("trailing"));
        let mut bad = bytes;
        bad[2] = 0x0D;
        assert!(parse_idx(&bad, None).unwrap_err().contains("f32"));
    }
}
