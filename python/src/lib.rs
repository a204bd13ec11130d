//! The Python package `facekit` (the extension module `facekit._facekit`): facekit datasets read
//! and written from Python, and the loader `facekit train` uses, yielding whole batches that numpy
//! and torch view without a copy. Built with maturin (`python/pyproject.toml`); depends on
//! `facekit-shard` and `facekit-data` only, never on dlib or libtorch. docs/PYTHON.md is its guide.
//!
//! - `Dataset` and `Sample` (one record, decoded) in [`dataset`];
//! - `Loader` (state_dict / load_state_dict) and `Batch` in [`loader`];
//! - `Tensor`, Rust-owned bytes behind `__array_interface__` and `__dlpack__`, in [`tensor`];
//! - `DatasetWriter` in [`writer`];
//! - the exceptions, and the one place Rust errors become them, in [`errors`].

use pyo3::prelude::*;

pub mod dataset;
pub mod errors;
pub mod loader;
pub mod tensor;
pub mod writer;

#[pymodule]
fn _facekit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<dataset::Dataset>()?;
    m.add_class::<dataset::Sample>()?;
    m.add_class::<loader::Loader>()?;
    m.add_class::<loader::Batch>()?;
    m.add_class::<tensor::Tensor>()?;
    m.add_class::<writer::DatasetWriter>()?;
    m.add("FacekitError", py.get_type::<errors::FacekitError>())?;
    m.add("CorruptRecordError", py.get_type::<errors::CorruptRecordError>())?;
    m.add("CorruptRecordWarning", py.get_type::<errors::CorruptRecordWarning>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
