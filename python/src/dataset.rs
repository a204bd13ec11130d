//! `facekit.Dataset`: a dataset opened for reading (its manifest, label map and shards, under a
//! shared lock), its records one at a time as `facekit.Sample`s, and `verify`.

use crate::errors::{corrupt, from_shard};
use crate::tensor::Tensor;
use facekit_shard::{verify, Dataset as Inner, DatasetPaths};
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;
use std::sync::Arc;

/// A facekit dataset (docs/FORMAT.md) opened for reading: `len(ds)`, `ds[i]` (a `Sample`),
/// iteration, `manifest`, `label_map`, `verify()`. Writers cannot replace it while it is open.
#[pyclass(module = "facekit", frozen)]
pub struct Dataset {
    pub(crate) inner: Arc<Inner>,
}

/// One record: its image decoded, its labels and where it came from.
#[pyclass(module = "facekit", frozen, get_all)]
pub struct Sample {
    /// The image, a numpy uint8 array of height x width x 3 (RGB).
    image: Py<PyAny>,
    /// Identity class id, or None where unknown.
    class_id: Option<u32>,
    /// Identity name from the label map, or None where unknown.
    identity: Option<String>,
    /// Source name (the manifest's `sources`), or None if the manifest does not list it.
    source: Option<String>,
    /// Source number as stored in the record.
    source_id: u16,
    /// Gender: 0 male, 1 female, None where unknown.
    gender: Option<u8>,
    /// Age in years, or None where unknown.
    age: Option<u16>,
    /// The original file's path relative to its input root (may be empty).
    path: String,
    /// The encoded image bytes exactly as stored.
    payload: Py<PyBytes>,
    /// The record's number in the dataset.
    index: usize,
}

#[pymethods]
impl Sample {
    fn __repr__(&self) -> String {
        format!(
            "facekit.Sample(index={}, class_id={:?}, identity={:?}, path={:?})",
            self.index, self.class_id, self.identity, self.path
        )
    }
}

#[pymethods]
impl Dataset {
    /// Opens a dataset: a name such as `training/celeb`, its manifest path, or an `os.PathLike`.
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        Self::open(path)
    }

    /// Number of records.
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Record `i` (negative counts from the end), checked (CRC, manifest) and decoded.
    fn __getitem__(&self, py: Python<'_>, i: isize) -> PyResult<Sample> {
        let len = self.inner.len();
        let k = if i < 0 { i + len as isize } else { i };
        if k < 0 || k as usize >= len {
            return Err(PyIndexError::new_err(format!("record {i} is out of range for a dataset of {len} records")));
        }
        self.sample(py, k as usize)
    }

    /// The dataset's name.
    #[getter]
    fn name(&self) -> String {
        self.inner.paths().name()
    }

    /// The manifest, as a dict (the JSON of docs/FORMAT.md).
    #[getter]
    fn manifest<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &serde_json::to_string(self.inner.manifest()).expect("a manifest serialises"))
    }

    /// The label map: a list of `(class_id, source, identity)` tuples, index = class id.
    #[getter]
    fn label_map(&self) -> Vec<(u32, String, String)> {
        self.inner.labels().entries.iter().map(|e| (e.class_id, e.source.clone(), e.identity.clone())).collect()
    }

    /// The class id of every record, read from the shard indexes alone (None where unknown).
    fn class_ids(&self) -> Vec<Option<u32>> {
        self.inner.class_ids()
    }

    /// Checks every byte of the dataset (and, with `decode=True`, decodes every image), as
    /// `facekit verify-shard --json` does: returns its report as a dict with `ok`, the manifest's
    /// `problems` and one report per shard (each problem names file, record and byte offset).
    #[pyo3(signature = (decode = false))]
    fn verify<'py>(&self, py: Python<'py>, decode: bool) -> PyResult<Bound<'py, PyAny>> {
        let check: &verify::PayloadCheck = &facekit_data::codec::decoded_size;
        let opts = verify::VerifyOptions { decode: decode.then_some(check) };
        let paths = self.inner.paths().clone();
        let report = py.detach(|| verify::verify_dataset(&paths, opts, &|_| {})).map_err(from_shard)?;
        let mut value = serde_json::to_value(&report).expect("a report serialises");
        value["ok"] = serde_json::Value::Bool(report.is_ok());
        json_to_py(py, &value.to_string())
    }

    fn __repr__(&self) -> String {
        format!(
            "facekit.Dataset({:?}, records={})",
            self.inner.paths().dir().join(self.inner.paths().name()),
            self.inner.len()
        )
    }
}

impl Dataset {
    /// Opens a dataset by name or manifest path.
    pub(crate) fn open(path: PathBuf) -> PyResult<Self> {
        let paths = DatasetPaths::resolve(&path.to_string_lossy(), None).map_err(from_shard)?;
        Ok(Dataset { inner: Arc::new(Inner::open(paths).map_err(from_shard)?) })
    }

    fn sample(&self, py: Python<'_>, i: usize) -> PyResult<Sample> {
        let view = self.inner.record(i).map_err(from_shard)?;
        let h = view.header;
        let encoding = facekit_shard::Encoding::from_code(h.encoding).expect("validated by the reader");
        let image =
            py.detach(|| facekit_data::codec::decode(encoding, view.payload, h.width, h.height)).map_err(|e| {
                let (k, j) = self.inner.locate(i).expect("record() found it");
                let shard = &self.inner.shards()[k];
                let origin = String::from_utf8_lossy(view.path);
                let message = format!(
                    "record {j} of shard {} (at byte {}, origin '{origin}') does not decode: {e}",
                    shard.path().display(),
                    shard.index()[j].offset
                );
                corrupt(message, shard.path(), Some(j as u64), shard.index()[j].offset, Some(&origin))
            })?;
        let (w, h_px) = image.dimensions();
        let array = py.import("numpy")?.call_method1("asarray", (Tensor::image(image.into_raw(), w, h_px),))?;
        let labels = view.labels();
        let manifest = self.inner.manifest();
        Ok(Sample {
            image: array.unbind(),
            class_id: labels.class_id,
            identity: labels.class_id.and_then(|c| self.inner.labels().identity(c)).map(str::to_owned),
            source: manifest.sources.iter().find(|s| s.id == labels.source).map(|s| s.name.clone()),
            source_id: labels.source,
            gender: labels.gender.map(|g| g.code()),
            age: labels.age,
            path: String::from_utf8_lossy(view.path).into_owned(),
            payload: PyBytes::new(py, view.payload).unbind(),
            index: i,
        })
    }
}

/// A JSON text as Python objects (through the standard library's `json`).
pub(crate) fn json_to_py<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (text,))
}
