//! The package's exceptions, and the one place Rust errors become them.
//!
//! - `facekit.FacekitError` (an `OSError`): a dataset cannot be opened, read or written.
//! - `facekit.CorruptRecordError` (a `FacekitError`): one record fails its checks or does not
//!   decode; its attributes `shard`, `record`, `offset` (and `origin` where known) say where.
//! - `facekit.CorruptRecordWarning` (a `RuntimeWarning`): a loader with `skip_corrupt=True`
//!   skipped a record; one warning per record, and the loader lists them.
//! - Settings that cannot work (a rank not below the world size, a zero batch size) raise
//!   `ValueError` before any work.

use pyo3::exceptions::{PyOSError, PyRuntimeWarning, PyValueError};
use pyo3::prelude::*;
use std::path::Path;

pyo3::create_exception!(
    facekit,
    FacekitError,
    PyOSError,
    "A dataset cannot be opened, read or written; the message names the file."
);
pyo3::create_exception!(
    facekit,
    CorruptRecordError,
    FacekitError,
    "A record fails its checks or does not decode. Attributes: shard (path), record (its number in that shard, None for damage outside any record), offset (byte offset in the shard file), origin (the record's origin path, or None)."
);

pyo3::create_exception!(
    facekit,
    CorruptRecordWarning,
    PyRuntimeWarning,
    "A loader with skip_corrupt=True skipped a corrupt record (the message names shard, record and byte offset)."
);

/// A `CorruptRecordError` naming shard, record and byte offset.
pub fn corrupt(message: String, shard: &Path, record: Option<u64>, offset: u64, origin: Option<&str>) -> PyErr {
    Python::attach(|py| {
        let err = CorruptRecordError::new_err(message);
        let value = err.value(py);
        let set = || -> PyResult<()> {
            value.setattr("shard", shard.display().to_string())?;
            value.setattr("record", record)?;
            value.setattr("offset", offset)?;
            value.setattr("origin", origin)?;
            Ok(())
        };
        match set() {
            Ok(()) => err,
            Err(e) => e,
        }
    })
}

/// A loader error as a Python exception.
pub fn from_data(e: facekit_data::Error) -> PyErr {
    use facekit_data::Error as E;
    if let Some(r) = e.record() {
        return corrupt(e.to_string(), &r.shard, Some(r.record), r.offset, r.origin.as_deref());
    }
    match e {
        E::Config(msg) => PyValueError::new_err(msg),
        E::Dataset(d) => from_shard(d),
        other => FacekitError::new_err(other.to_string()),
    }
}

/// A dataset error as a Python exception.
pub fn from_shard(e: facekit_shard::Error) -> PyErr {
    match &e {
        facekit_shard::Error::Corrupt { path, source } => {
            corrupt(e.to_string(), path, source.record, source.offset, None)
        }
        _ => FacekitError::new_err(e.to_string()),
    }
}
