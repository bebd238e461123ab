//! Output files that lose nothing: targets are checked before any work, symlinks are
//! written through, special files are refused, and every write is atomic.
//!
//! The rules (what `torch.save` does where it has one):
//! - a symlink is followed (up to 40 links) and its target written, never the link
//!   replaced; a dangling link's target is created;
//! - an existing target that is not a regular file (a directory, FIFO, socket or device
//!   node) is refused;
//! - the bytes go to a temporary file beside the target, synced, then renamed over it
//!   (the target's permissions are kept); the temporary name is the same for every save
//!   to one target, so one left by a killed save is replaced and removed by the next;
//! - [`check_output`] proves a target writable before a long run by creating and
//!   removing that temporary file, and [`check_distinct`] refuses two outputs (or an
//!   output and an input) that are one file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::base::{Error, Result};

/// Symbolic links followed before giving up (Linux's limit).
const MAX_LINKS: usize = 40;
/// The longest file name most file systems take, in bytes.
const NAME_MAX: usize = 255;
/// The suffix of temporary files.
const TMP_SUFFIX: &str = ".gradstep-tmp";

fn invalid(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// What a non-regular file is, for messages.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device node";
        }
    }
    "not a regular file"
}

/// The file that writing `path` must change: `path` itself, or the end of its chain of
/// symlinks. An error when the chain is too long, or the file exists and is not regular.
pub fn write_target(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..=MAX_LINKS {
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(Error::io(&p, e)),
        };
        if meta.file_type().is_symlink() {
            let link = std::fs::read_link(&p).map_err(|e| Error::io(&p, e))?;
            p = match p.parent() {
                Some(dir) if link.is_relative() => dir.join(link),
                _ => link,
            };
            continue;
        }
        if !meta.is_file() {
            let what = kind_of(&meta);
            return Err(invalid(
                path,
                if p == path {
                    format!("exists and is {what}, not a file to write")
                } else {
                    format!("links to {}, which is {what}", p.display())
                },
            ));
        }
        return Ok(p);
    }
    Err(invalid(
        path,
        format!("more than {MAX_LINKS} symbolic links"),
    ))
}

/// The directory and the temporary file beside a target: `.NAME.gradstep-tmp`, with a
/// long name shortened (keeping a hash of the whole name) to fit `NAME_MAX`.
fn temp_path(target: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .ok_or_else(|| invalid(target, "is not a file path"))?
        .to_string_lossy();
    let room = NAME_MAX - 1 - TMP_SUFFIX.len();
    let stem = if name.len() <= room {
        name.into_owned()
    } else {
        let hash = fnv1a(name.as_bytes());
        let mut cut = room - 17;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}-{hash:016x}", &name[..cut])
    };
    let tmp = dir.join(format!(".{stem}{TMP_SUFFIX}"));
    Ok((dir, tmp))
}

/// 64-bit FNV-1a: a stable short name for a long one.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Checks before a long run that `path` can be written: its target is a regular file or
/// absent, its directory exists, and a file can be created there. Nothing is left behind.
pub fn check_output(path: &Path) -> Result<()> {
    let target = write_target(path)?;
    let (dir, tmp) = temp_path(&target)?;
    if !dir.is_dir() {
        return Err(invalid(
            path,
            format!(
                "cannot be written: directory {} does not exist",
                dir.display()
            ),
        ));
    }
    std::fs::File::create(&tmp).map_err(|e| Error::io(path, e))?;
    std::fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e))
}

/// The identity of the file a path names (after symlinks), for [`check_distinct`].
fn identity(path: &Path) -> Option<PathBuf> {
    let target = write_target(path).ok()?;
    if let Ok(p) = target.canonicalize() {
        return Some(p);
    }
    // Not there yet: the canonical directory and the name.
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(dir.canonicalize().ok()?.join(target.file_name()?))
}

/// Refuses two of `files` (`(flag, path)`) that name one file, through symlinks too.
pub fn check_distinct(files: &[(&str, &Path)]) -> Result<()> {
    let ids: Vec<Option<PathBuf>> = files.iter().map(|(_, p)| identity(p)).collect();
    for i in 0..files.len() {
        for j in i + 1..files.len() {
            if ids[i].is_some() && ids[i] == ids[j] {
                return Err(Error::invalid(
                    "output",
                    format!(
                        "{} {} and {} {} are the same file: one would overwrite the other",
                        files[i].0,
                        files[i].1.display(),
                        files[j].0,
                        files[j].1.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: through the temporary file beside the target
/// (see the module notes), synced, then renamed over the target. A crash leaves either
/// the old file or the new one, never a mix; a symlink stays a symlink.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let target = write_target(path)?;
    let (dir, tmp) = temp_path(&target)?;
    let old = std::fs::metadata(&target).ok();
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Some(m) = &old {
            f.set_permissions(m.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // Persist the rename itself; not every platform can open a directory, so best effort.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
