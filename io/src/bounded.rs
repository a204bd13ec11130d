//! Reading files whose paths come from users or from other files (manifests, pairs lists).
//!
//! Three promises, kept in this one place so that every reader gets them:
//! - **only regular files**: a FIFO, socket or device (`/dev/zero`) is refused before it is read,
//!   so nothing hangs waiting for a writer or reads forever; symlinks are followed and the file
//!   they reach must be regular too;
//! - **a stated budget**: every kind of file has a [`Budget`] (docs/RELIABILITY.md lists them);
//!   a larger file is refused from its size, before anything proportional to it is allocated;
//! - **confinement**: a name read from a file ([`confined_join`]) is a relative path without `..`
//!   whose target, symlinks resolved, lies inside the folder it belongs to.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The most bytes facekit reads from one kind of file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// What the file is, for messages (`photo`, `manifest`).
    pub what: &'static str,
    /// Largest accepted size in bytes.
    pub bytes: u64,
}

/// An input photo (pack, embed, eval): 256 MiB, far above any camera's JPEG.
pub const PHOTO: Budget = Budget { what: "photo", bytes: 256 << 20 };
/// A dataset manifest: 64 MiB (about 300,000 shards).
pub const MANIFEST: Budget = Budget { what: "manifest", bytes: 64 << 20 };
/// A label map: 1 GiB (some 20 million identities).
pub const LABEL_MAP: Budget = Budget { what: "label map", bytes: 1 << 30 };
/// A `--landmarks` or `--attributes` table: 4 GiB (tens of millions of lines).
pub const TABLE: Budget = Budget { what: "table", bytes: 4 << 30 };
/// An LFW-style pairs list: 256 MiB.
pub const PAIRS: Budget = Budget { what: "pairs list", bytes: 256 << 20 };
/// An insightface verification `.bin`: 8 GiB (lfw.bin is 60 MB; IJB-C as a .bin about 4 GB).
pub const VERIFICATION_BIN: Budget = Budget { what: "verification .bin", bytes: 8 << 30 };
/// Small JSON state: progress files, `config.json`, `state.json`, `net.json`: 64 MiB.
pub const STATE: Budget = Budget { what: "state file", bytes: 64 << 20 };
/// An embeddings matrix (`.npy`) or its `labels.tsv`: 64 GiB (30 million 512-d rows).
pub const EMBEDDINGS: Budget = Budget { what: "embeddings file", bytes: 64 << 30 };

/// Why a file could not be read.
#[derive(Debug)]
pub enum FileError {
    /// The path names something other than a regular file (a folder, FIFO, socket, device).
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead (`a FIFO`, `a character device`...).
        kind: &'static str,
    },
    /// The file is larger than its budget.
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The budget it exceeds.
        budget: Budget,
    },
    /// A name read from a file would leave the folder it belongs to.
    Escapes {
        /// The folder.
        dir: PathBuf,
        /// The name as written.
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The bytes are not UTF-8 text.
    NotText {
        /// The path.
        path: PathBuf,
    },
    /// The operating system refused (missing file, permissions, I/O error).
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl FileError {
    /// Stable short code for reports: `not_a_regular_file`, `too_large`, `outside_folder`,
    /// `not_text` or `unreadable`.
    pub fn reason(&self) -> &'static str {
        match self {
            FileError::NotRegular { .. } => "not_a_regular_file",
            FileError::TooLarge { .. } => "too_large",
            FileError::Escapes { .. } => "outside_folder",
            FileError::NotText { .. } => "not_text",
            FileError::Io { .. } => "unreadable",
        }
    }

    /// True when the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::NotRegular { path, kind } => write!(f, "{} is {kind}, not a regular file", path.display()),
            FileError::TooLarge { path, bytes, budget } => write!(
                f,
                "{} holds {bytes} bytes, more than the {} MiB a {} may have",
                path.display(),
                budget.bytes >> 20,
                budget.what
            ),
            FileError::Escapes { dir, name, why } => {
                write!(f, "'{name}' {why} (it must stay inside {})", dir.display())
            }
            FileError::NotText { path } => write!(f, "{} is not UTF-8 text", path.display()),
            FileError::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
        }
    }
}

/// The operating system's error of [`FileError::Io`] is part of the message, so it is not also
/// the error's `source()`: a printer of the whole chain would say it twice.
impl std::error::Error for FileError {}

/// Lowercase hex SHA-256 of the regular file at `path` ([`open_regular`]), streamed in 1 MiB
/// reads: files of any size (a network's weights, an `.idx` of hundreds of megabytes) in bounded
/// memory, and a FIFO or device refused rather than read until it ends.
pub fn file_sha256(path: &Path) -> Result<String, FileError> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = open_regular(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf).map_err(io(path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io { path: path.to_path_buf(), source }
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
    }
    if ft.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading if (after following symlinks) it is a regular file.
///
/// The type is checked before opening (opening some devices has effects of its own) and again on
/// the open descriptor, which is opened non-blocking so that a FIFO swapped in between cannot
/// block; for a regular file the flag changes nothing.
pub fn open_regular(path: &Path) -> Result<File, FileError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if !meta.is_file() {
        return Err(FileError::NotRegular { path: path.to_path_buf(), kind: kind_of(meta.file_type()) });
    }
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = opts.open(path).map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    if !meta.is_file() {
        return Err(FileError::NotRegular { path: path.to_path_buf(), kind: kind_of(meta.file_type()) });
    }
    Ok(file)
}

/// Opens a regular file and checks its size against `budget`; returns the file and its size.
pub fn open_within(path: &Path, budget: Budget) -> Result<(File, u64), FileError> {
    let file = open_regular(path)?;
    let bytes = file.metadata().map_err(io(path))?.len();
    if bytes > budget.bytes {
        return Err(FileError::TooLarge { path: path.to_path_buf(), bytes, budget });
    }
    Ok((file, bytes))
}

/// Reads a whole regular file of at most `budget` bytes. A file that grows while it is read is
/// still cut at the budget.
pub fn read(path: &Path, budget: Budget) -> Result<Vec<u8>, FileError> {
    let (file, bytes) = open_within(path, budget)?;
    let mut out = Vec::with_capacity(bytes as usize);
    file.take(budget.bytes + 1).read_to_end(&mut out).map_err(io(path))?;
    if out.len() as u64 > budget.bytes {
        return Err(FileError::TooLarge { path: path.to_path_buf(), bytes: out.len() as u64, budget });
    }
    Ok(out)
}

/// [`read`] for UTF-8 text.
pub fn read_string(path: &Path, budget: Budget) -> Result<String, FileError> {
    String::from_utf8(read(path, budget)?).map_err(|_| FileError::NotText { path: path.to_path_buf() })
}

/// True when `name` is one plain path component: not empty, not `.` or `..`, no `/` and no NUL.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// `dir/name` for a relative `name` read from a file, refused when it is absolute, holds `..`, or
/// (symlinks resolved) leads outside `dir`. A target that does not exist yet is checked lexically
/// only, and is then refused by whatever opens it.
pub fn confined_join(dir: &Path, name: &str) -> Result<PathBuf, FileError> {
    let escapes = |why| FileError::Escapes { dir: dir.to_path_buf(), name: name.to_string(), why };
    if name.is_empty() || name.contains('\0') {
        return Err(escapes("is not a file name"));
    }
    let rel = Path::new(name);
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(escapes("climbs out with `..`")),
            Component::RootDir | Component::Prefix(_) => return Err(escapes("is an absolute path")),
        }
    }
    let base = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let joined = base.join(rel);
    match (joined.canonicalize(), base.canonicalize()) {
        (Ok(real), Ok(real_dir)) if !real.starts_with(&real_dir) => Err(escapes("is a link that leads outside")),
        _ => Ok(dir.join(rel)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sha256_streams_a_file_past_one_read_and_refuses_fifos_and_devices() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("weights.safetensors");
        // Larger than one 1 MiB read: the hash must cover every read, not only the first.
        std::fs::write(&p, vec![b'a'; (1 << 20) + 3]).unwrap();
        assert_eq!(file_sha256(&p).unwrap(), "f5e25b6b994188fdb721357d459785dc479934edfd40f95658a45ab2ce2d8027");
        let fifo = t.path().join("features.npy");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(file_sha256(&fifo).unwrap_err().reason(), "not_a_regular_file");
        assert_eq!(file_sha256(Path::new("/dev/zero")).unwrap_err().reason(), "not_a_regular_file");
    }

    #[test]
    fn fifos_devices_and_folders_are_refused_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("photo.jpg");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read(&fifo, PHOTO).unwrap_err();
        assert_eq!(err.reason(), "not_a_regular_file");
        assert!(err.to_string().contains("a FIFO"), "{err}");
        assert!(read(Path::new("/dev/zero"), PHOTO).unwrap_err().to_string().contains("character device"));
        assert!(read(t.path(), PHOTO).unwrap_err().to_string().contains("a folder"));
        // A symlink to the FIFO is the FIFO.
        let link = t.path().join("link.jpg");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert_eq!(read(&link, PHOTO).unwrap_err().reason(), "not_a_regular_file");
    }

    #[test]
    fn files_over_their_budget_are_refused_from_their_size() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("big.json");
        std::fs::write(&p, vec![b' '; 101]).unwrap();
        let small = Budget { what: "test file", bytes: 100 };
        let err = read(&p, small).unwrap_err();
        assert_eq!(err.reason(), "too_large");
        assert!(err.to_string().contains("big.json") && err.to_string().contains("test file"), "{err}");
        assert_eq!(read(&p, Budget { what: "test file", bytes: 101 }).unwrap().len(), 101);
    }

    #[test]
    fn names_from_files_stay_inside_their_folder() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("training");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(t.path().join("secret"), b"x").unwrap();
        std::fs::write(dir.join("celeb-00000.shard"), b"x").unwrap();
        assert_eq!(confined_join(&dir, "celeb-00000.shard").unwrap(), dir.join("celeb-00000.shard"));
        for bad in ["../secret", "/etc/passwd", "a/../../secret", ""] {
            assert_eq!(confined_join(&dir, bad).unwrap_err().reason(), "outside_folder", "{bad}");
        }
        std::os::unix::fs::symlink(t.path().join("secret"), dir.join("link")).unwrap();
        let err = confined_join(&dir, "link").unwrap_err();
        assert!(err.to_string().contains("leads outside"), "{err}");
        assert!(is_plain_name("Colin_Powell") && !is_plain_name("..") && !is_plain_name("a/b") && !is_plain_name(""));
    }
}
