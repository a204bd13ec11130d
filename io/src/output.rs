//! What a command writes, checked before any work and held while it writes.
//!
//! Every facekit command that writes (pack, import, export, make-bin, verify's reports, embed,
//! train's run folder) first names its inputs and its outputs to an [`OutputCheck`], which
//! refuses an output that
//! - is one of the command's inputs, lies inside an input folder, or (a folder replaced whole)
//!   holds one;
//! - belongs to something the command did not create: a file of a dataset, anything inside a run
//!   folder. facekit-io knows neither: the caller gives [`Recogniser`]s (`facekit_shard` knows a
//!   dataset's files by their names, `facekit_train` a run folder by its marker files);
//! - is not what the command writes: a symlink, FIFO, socket or device where a file or folder is
//!   written, a file where a folder is, a folder holding files the command does not write (it
//!   would be replaced whole), or the current folder.
//!
//! [`hold`] then takes the output's lock, `.NAME.lock` beside it so that no lock ends up in what
//! is delivered, and removes what an interrupted writer of it left beside it: temporaries, and a
//! predecessor that [`crate::durable::replace_dir`] had moved aside.

use crate::durable::{self, WriteError};
use crate::lock::{self, Lock, LockError};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// Something that owns files on disk: a dataset, a run folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// What it is, for messages (`dataset /data/training/celeb`).
    pub what: String,
    /// Its identity, folders resolved: a dataset's base path (`/data/training/celeb`), a run
    /// folder's path.
    pub root: PathBuf,
}

/// Says whether exactly `path` (its folders resolved) belongs to an [`Owner`]: a file of a
/// dataset, a run folder. [`OutputCheck`] asks it about an output and each folder above it.
pub type Recogniser = fn(&Path) -> Option<Owner>;

/// Why an output is refused.
#[derive(Debug)]
pub enum OutputError {
    /// The output is one of the command's inputs (or a file of the dataset it writes is).
    IsInput {
        /// The output as given.
        output: PathBuf,
        /// The input as given.
        input: PathBuf,
    },
    /// The output lies inside an input folder.
    InsideInput {
        /// The output as given.
        output: PathBuf,
        /// The input folder as given.
        input: PathBuf,
    },
    /// A folder replaced whole holds an input.
    HoldsInput {
        /// The output folder as given.
        output: PathBuf,
        /// The input as given.
        input: PathBuf,
    },
    /// The output belongs to a dataset or run folder the command did not create.
    Owned {
        /// The output as given.
        output: PathBuf,
        /// Its owner.
        owner: Owner,
    },
    /// The output exists and is not what the command writes there.
    WrongKind {
        /// The output as given.
        output: PathBuf,
        /// What it is (`a symbolic link`, `a FIFO`, `a folder`).
        is: &'static str,
        /// What the command writes (`a file`, `a folder`).
        wants: &'static str,
    },
    /// A folder replaced whole holds files the command does not write.
    Foreign {
        /// The output folder as given.
        output: PathBuf,
        /// Up to three of those files.
        examples: Vec<String>,
        /// How many there are.
        count: usize,
    },
    /// The output is the current folder or one above it.
    HoldsCurrentFolder {
        /// The output folder as given.
        output: PathBuf,
    },
    /// The output's folders could not be resolved or listed.
    Io {
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// Another process writes the output.
    Lock(LockError),
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |p: &PathBuf| p.display().to_string();
        match self {
            OutputError::IsInput { output, input } => write!(
                f,
                "output {} is, or holds, the command's input {}: writing it would destroy what is read; choose another output",
                d(output),
                d(input)
            ),
            OutputError::InsideInput { output, input } => write!(
                f,
                "output {} is inside input folder {}: the command would write into what it reads; choose an output outside it",
                d(output),
                d(input)
            ),
            OutputError::HoldsInput { output, input } => write!(
                f,
                "output folder {} holds the command's input {}, and is replaced whole; choose a new or empty folder",
                d(output),
                d(input)
            ),
            OutputError::Owned { output, owner } => write!(
                f,
                "output {} belongs to {}, which this command did not create; writing there would corrupt it: choose another output",
                d(output),
                owner.what
            ),
            OutputError::WrongKind { output, is, wants } => {
                write!(f, "output {} is {is}; this command writes {wants} there and replaces it atomically: choose another output", d(output))
            }
            OutputError::Foreign { output, examples, count } => write!(
                f,
                "output folder {} holds {count} file(s) this command does not write ({}{}); it is replaced whole, so choose a new or empty folder",
                d(output),
                examples.join(", "),
                if *count > examples.len() { ", ..." } else { "" }
            ),
            OutputError::HoldsCurrentFolder { output } => {
                write!(f, "output folder {} is the current folder or holds it, and is replaced whole; choose a folder below it", d(output))
            }
            // The cause is part of the message, so it is not also returned by `source()`: a
            // printer of the error chain would say it twice.
            OutputError::Io { path, error } => write!(f, "cannot resolve output {}: {error}", d(path)),
            OutputError::Lock(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OutputError {}

impl From<LockError> for OutputError {
    fn from(e: LockError) -> Self {
        OutputError::Lock(e)
    }
}

/// An input of a command: as given (for messages) and resolved.
#[derive(Debug, Clone)]
struct Input {
    given: PathBuf,
    real: PathBuf,
    folder: bool,
}

/// A command's inputs and the recognisers of what it must not write into; checks its outputs.
#[derive(Debug, Clone, Default)]
pub struct OutputCheck {
    recognisers: Vec<Recogniser>,
    inputs: Vec<Input>,
}

impl OutputCheck {
    /// A check that knows the owners `recognisers` recognise.
    pub fn new(recognisers: &[Recogniser]) -> Self {
        OutputCheck { recognisers: recognisers.to_vec(), inputs: Vec::new() }
    }

    /// Adds an input file or folder of the command. One that does not exist is left to the
    /// command's reader to report.
    pub fn input(mut self, path: impl AsRef<Path>) -> Self {
        let given = path.as_ref();
        if let Ok(real) = given.canonicalize() {
            let folder = real.is_dir();
            self.inputs.push(Input { given: given.to_path_buf(), real, folder });
        }
        self
    }

    /// Adds every input of `paths`.
    pub fn inputs<P: AsRef<Path>>(self, paths: impl IntoIterator<Item = P>) -> Self {
        paths.into_iter().fold(self, |check, p| check.input(p))
    }

    /// Checks a file the command writes (replacing any file there atomically): absent or a
    /// regular file, no input, not inside an input folder, owned by nothing.
    pub fn file(&self, path: &Path) -> Result<(), OutputError> {
        kind_is(path, false)?;
        let real = resolve(path)?;
        self.unowned(path, &real, None)?;
        self.not_an_input(path, &real, false)
    }

    /// Checks a folder the command replaces whole: absent, or a folder (not a link) holding
    /// only files named in `own`; holding no input and not inside one; owned by nothing; not
    /// the current folder.
    pub fn folder(&self, path: &Path, own: &[&str]) -> Result<(), OutputError> {
        kind_is(path, true)?;
        let real = resolve(path)?;
        self.unowned(path, &real, None)?;
        self.not_an_input(path, &real, true)?;
        if std::env::current_dir().and_then(|c| c.canonicalize()).is_ok_and(|cwd| cwd.starts_with(&real)) {
            return Err(OutputError::HoldsCurrentFolder { output: path.to_path_buf() });
        }
        foreign_files(path, own)
    }

    /// Checks the files of an owner the command itself makes at `root` (a dataset's base path,
    /// a run folder), which it may replace: no input is among them or inside an input folder,
    /// and nothing else owns them or a folder above them.
    pub fn owned(&self, root: &Path) -> Result<(), OutputError> {
        let real = resolve(root)?;
        self.unowned(root, &real, Some(&real))?;
        self.not_an_input(root, &real, true)?;
        for input in &self.inputs {
            if self.owners(&input.real).any(|o| o.root == real) {
                return Err(OutputError::IsInput { output: root.to_path_buf(), input: input.given.clone() });
            }
        }
        Ok(())
    }

    /// Refuses an output that is an input, lies inside an input folder, or (`whole`) holds an
    /// input.
    fn not_an_input(&self, given: &Path, real: &Path, whole: bool) -> Result<(), OutputError> {
        for input in &self.inputs {
            let (output, input_given) = (given.to_path_buf(), input.given.clone());
            if input.real == real {
                return Err(OutputError::IsInput { output, input: input_given });
            }
            if input.folder && real.starts_with(&input.real) {
                return Err(OutputError::InsideInput { output, input: input_given });
            }
            if whole && input.real.starts_with(real) {
                return Err(OutputError::HoldsInput { output, input: input_given });
            }
        }
        Ok(())
    }

    /// Refuses an output that an owner other than `own` claims, or that lies in a folder one
    /// claims.
    fn unowned(&self, given: &Path, real: &Path, own: Option<&Path>) -> Result<(), OutputError> {
        for at in real.ancestors() {
            if let Some(owner) = self.owners(at).find(|o| Some(o.root.as_path()) != own) {
                return Err(OutputError::Owned { output: given.to_path_buf(), owner });
            }
        }
        Ok(())
    }

    fn owners<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = Owner> + 'a {
        self.recognisers.iter().filter_map(move |r| r(path))
    }
}

/// Refuses an existing `path` that is not a regular file (`folder`: not a folder); a symlink is
/// refused, not followed: the output would replace the link, not what it points to.
fn kind_is(path: &Path, folder: bool) -> Result<(), OutputError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(OutputError::Io { path: path.to_path_buf(), error }),
    };
    let ft = meta.file_type();
    let is = if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_dir() {
        "a folder"
    } else if ft.is_file() {
        "a regular file"
    } else {
        special_kind(ft)
    };
    let wants = if folder { "a folder" } else { "a regular file" };
    if is != wants {
        return Err(OutputError::WrongKind {
            output: path.to_path_buf(),
            is,
            wants: if folder { "a folder" } else { "a file" },
        });
    }
    Ok(())
}

fn special_kind(ft: fs::FileType) -> &'static str {
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
    let _ = ft;
    "not a regular file"
}

/// Refuses a folder holding entries not named in `own`.
fn foreign_files(path: &Path, own: &[&str]) -> Result<(), OutputError> {
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(OutputError::Io { path: path.to_path_buf(), error }),
    };
    let mut foreign = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| OutputError::Io { path: path.to_path_buf(), error })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !own.contains(&name.as_str()) {
            foreign.push(name);
        }
    }
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    let count = foreign.len();
    foreign.truncate(3);
    Err(OutputError::Foreign { output: path.to_path_buf(), examples: foreign, count })
}

/// `path` with the folders above it resolved (the nearest existing one canonicalised, the rest
/// appended) and its last component kept as it is; a path ending in `.` or `..` is resolved
/// whole.
fn resolve(path: &Path) -> Result<PathBuf, OutputError> {
    let io = |error| OutputError::Io { path: path.to_path_buf(), error };
    let Some(name) = path.file_name() else { return path.canonicalize().map_err(io) };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tail = Vec::new();
    let mut at = parent.to_path_buf();
    loop {
        if let Ok(real) = at.canonicalize() {
            return Ok(tail.iter().rev().fold(real, |p: PathBuf, c| p.join(c)).join(name));
        }
        match (at.file_name().map(|n| n.to_os_string()), at.parent()) {
            (Some(n), Some(up)) => {
                tail.push(n);
                at = if up.as_os_str().is_empty() { PathBuf::from(".") } else { up.to_path_buf() };
            }
            _ => return Err(io(std::io::Error::new(std::io::ErrorKind::NotFound, "no folder above it exists"))),
        }
    }
}

/// An output held by this process: its lock taken, what an interrupted writer of it left
/// cleared. Dropping it releases the lock.
#[derive(Debug)]
pub struct Held {
    path: PathBuf,
    cleared: usize,
    _lock: Lock,
}

impl Held {
    /// The output.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many leftovers of an interrupted writer were removed (or, for a folder moved aside,
    /// put back).
    pub fn cleared(&self) -> usize {
        self.cleared
    }

    /// Replaces the held folder with what `build` writes into a fresh temporary folder beside
    /// it ([`durable::replace_dir`]): its files are committed together or not at all.
    pub fn replace_dir<E: From<WriteError>>(&self, build: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
        durable::replace_dir(&self.path, build)
    }
}

/// Takes the lock of output `path` (a file, or a folder replaced whole): `.NAME.lock` in the
/// folder above it, so that none ends up in what is delivered, held for `what` (`export folder
/// exp`). Under the lock every temporary of the output is stale whatever PID it names, so those
/// an interrupted writer left are removed: `.tmp-PID-NAME` and `.tmp-PID-NAME<companion>` for
/// each of `companions` (files written beside it, as `.rejects.tsv`); and a folder that
/// [`durable::replace_dir`] had moved aside (`.old-NAME`) is removed when `NAME` is there, else
/// put back.
pub fn hold(path: &Path, what: &str, companions: &[&str]) -> Result<Held, OutputError> {
    let real = resolve(path)?;
    let (Some(dir), Some(name)) = (real.parent(), real.file_name().map(|n| n.to_string_lossy().into_owned())) else {
        return Err(OutputError::WrongKind {
            output: path.to_path_buf(),
            is: "the root folder",
            wants: "a file or folder",
        });
    };
    let io = |error| OutputError::Io { path: path.to_path_buf(), error };
    fs::create_dir_all(dir).map_err(io)?;
    let lock = lock::exclusive(&dir.join(format!(".{name}.lock")), what)?;
    let targets: Vec<String> =
        std::iter::once(name.clone()).chain(companions.iter().map(|c| format!("{name}{c}"))).collect();
    let mut cleared = 0;
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, target)) = file.strip_prefix(".tmp-").and_then(|r| r.split_once('-')) else { continue };
        if pid.bytes().all(|b| b.is_ascii_digit()) && targets.iter().any(|t| t == target) {
            remove_any(&entry.path()).map_err(io)?;
            cleared += 1;
        }
    }
    let old = dir.join(format!(".old-{name}"));
    if old.exists() {
        if real.exists() {
            remove_any(&old).map_err(io)?;
        } else {
            fs::rename(&old, &real).map_err(io)?;
        }
        cleared += 1;
    }
    Ok(Held { path: path.to_path_buf(), cleared, _lock: lock })
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    if fs::symlink_metadata(p)?.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset_file(p: &Path) -> Option<Owner> {
        let name = p.file_name()?.to_str()?.strip_suffix(".shard")?;
        Some(Owner { what: format!("dataset of {name}"), root: p.with_file_name("celeb") })
    }

    #[test]
    fn outputs_over_inputs_owned_files_and_special_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let input = t.path().join("photos");
        fs::create_dir(&input).unwrap();
        fs::write(t.path().join("pairs.txt"), b"1\n").unwrap();
        let check = OutputCheck::new(&[dataset_file])
            .input(&input)
            .input(t.path().join("pairs.txt"))
            .input(t.path().join("missing"));
        let reason = |r: Result<(), OutputError>| r.unwrap_err().to_string();
        assert!(reason(check.file(&t.path().join("pairs.txt"))).contains("the command's input"));
        assert!(reason(check.file(&input.join("x.bin"))).contains("inside input folder"));
        assert!(reason(check.folder(t.path(), &[])).contains("holds the command's input"));
        assert!(reason(check.file(&t.path().join("celeb-00000.shard"))).contains("belongs to dataset of celeb-00000"));
        std::os::unix::fs::symlink(t.path().join("elsewhere"), t.path().join("link.bin")).unwrap();
        assert!(reason(check.file(&t.path().join("link.bin"))).contains("a symbolic link"));
        assert!(reason(check.file(Path::new("/dev/null"))).contains("a character device"));
        check.file(&t.path().join("new/out.bin")).unwrap();
        check.folder(&t.path().join("new/exp"), &[]).unwrap();
        check.owned(&t.path().join("celeb")).unwrap();
    }

    #[test]
    fn a_folder_replaced_whole_may_hold_only_its_own_files() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("exp");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("net.json"), b"{}").unwrap();
        let check = OutputCheck::new(&[]);
        check.folder(&out, &["net.json"]).unwrap();
        fs::write(out.join("notes.txt"), b"mine").unwrap();
        let err = check.folder(&out, &["net.json"]).unwrap_err().to_string();
        assert!(err.contains("notes.txt") && err.contains("new or empty folder"), "{err}");
    }

    #[test]
    fn holding_an_output_clears_what_an_interrupted_writer_left_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("lfw.bin");
        for leftover in
            [".tmp-1-lfw.bin", ".tmp-77-lfw.bin.rejects.tsv", ".tmp-5-lfw.binary", ".tmp-5-other.bin", "lfw.bin"]
        {
            fs::write(t.path().join(leftover), b"x").unwrap();
        }
        let held = hold(&out, "verification file lfw.bin", &[".rejects.tsv"]).unwrap();
        assert_eq!(held.cleared(), 2);
        let mut left: Vec<String> =
            fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, [".lfw.bin.lock", ".tmp-5-lfw.binary", ".tmp-5-other.bin", "lfw.bin"]);
        let again = hold(&out, "verification file lfw.bin", &[]).unwrap_err().to_string();
        assert!(again.contains("in use by another facekit process"), "{again}");
        drop(held);

        // A folder moved aside by a replacement that then crashed is put back.
        let exp = t.path().join("exp");
        fs::create_dir(t.path().join(".old-exp")).unwrap();
        fs::write(t.path().join(".old-exp/net.json"), b"{}").unwrap();
        hold(&exp, "export folder exp", &[]).unwrap();
        assert!(exp.join("net.json").is_file() && !t.path().join(".old-exp").exists());
    }
}
