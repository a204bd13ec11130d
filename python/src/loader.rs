//! `facekit.Loader`: the Rust loader (`facekit_data::Loader`) as a Python iterator of whole
//! batches. Its decode threads run with the GIL released; a batch crosses into Python as one
//! object whose arrays are views of Rust memory (`facekit.Tensor`), so no Python code runs per
//! image. The loader is a cursor over (epoch, batch): `state_dict()` is that position, and a
//! loader restored from it yields exactly the batches an uninterrupted one would have yielded.

use crate::dataset::Dataset;
use crate::errors::{from_data, CorruptRecordWarning};
use crate::tensor::Tensor;
use facekit_data::{Augment, EpochIter, Fetch, LoaderConfig, Order, DEFAULT_PAGE_BYTES};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Version of the dict `state_dict()` returns.
const STATE_VERSION: u32 = 1;
/// Pages open at once in the quasi-random order by default (about 128 MiB of 8 MiB pages).
const DEFAULT_WINDOW: u32 = 16;
/// How many skipped corrupt records the loader lists (the count keeps going).
const MAX_CORRUPT_LISTED: usize = 100;

/// One batch: `images` (n x size x size x 3, uint8 RGB) and per-image `labels` (class ids),
/// `gender`, `age` (int64, -1 where unknown), `indices` (record numbers) and `flipped` (bool),
/// each a `facekit.Tensor` that `numpy.asarray` and `torch.from_dlpack` view without a copy.
#[pyclass(module = "facekit", frozen, get_all)]
pub struct Batch {
    /// Number of images.
    n: usize,
    /// Side of every image in pixels.
    size: u32,
    /// The epoch this batch belongs to.
    epoch: u64,
    /// Its number within the epoch (for this rank).
    index: u64,
    /// Pixels, n x size x size x 3 uint8, in a slot of the loader's ring (given back when the
    /// last array over it is gone).
    images: Py<Tensor>,
    /// Class id of each image (offset into the loader's label space), -1 where unknown.
    labels: Py<Tensor>,
    /// Gender of each image (0 male, 1 female), -1 where unknown.
    gender: Py<Tensor>,
    /// Age of each image in years, -1 where unknown.
    age: Py<Tensor>,
    /// Record number of each image over the loader's concatenated datasets.
    indices: Py<Tensor>,
    /// Whether each image was mirrored.
    flipped: Py<Tensor>,
}

impl Batch {
    fn new(py: Python<'_>, b: facekit_data::Batch, epoch: u64, index: u64) -> PyResult<Self> {
        let indices: Vec<i64> = b.indices.iter().map(|&i| i as i64).collect();
        Ok(Batch {
            n: b.n,
            size: b.size,
            epoch,
            index,
            labels: Py::new(py, Tensor::i64s(&b.class))?,
            gender: Py::new(py, Tensor::i64s(&b.gender))?,
            age: Py::new(py, Tensor::i64s(&b.age))?,
            indices: Py::new(py, Tensor::i64s(&indices))?,
            flipped: Py::new(py, Tensor::bools(&b.flipped))?,
            images: Py::new(py, Tensor::images(b.images, b.n, b.size))?,
        })
    }
}

#[pymethods]
impl Batch {
    fn __len__(&self) -> usize {
        self.n
    }

    fn __repr__(&self) -> String {
        format!("facekit.Batch(n={}, size={}, epoch={}, index={})", self.n, self.size, self.epoch, self.index)
    }
}

/// Streams shuffled, augmented batches from one or more datasets: the loader `facekit train`
/// uses, with the same batches for the same seed, rank and world size. Iterating gives the rest
/// of the current epoch; the next iteration gives the next epoch.
#[pyclass(module = "facekit")]
pub struct Loader {
    inner: Arc<facekit_data::Loader>,
    epoch: u64,
    /// The next batch of `epoch` to yield.
    batch: u64,
    /// The running epoch, positioned at `batch` (a mutex only to make the class `Sync`: Python
    /// calls it under the GIL, one at a time).
    running: Mutex<Option<EpochIter>>,
    /// Corrupt records the running epoch iterator reported so far.
    seen_corrupt: u64,
    corrupt_skipped: u64,
    corrupt: Vec<(String, u64, u64, String)>,
}

#[pymethods]
impl Loader {
    /// See `facekit/_facekit.pyi` for every argument.
    #[new]
    #[pyo3(signature = (datasets, batch_size = 128, image_size = 112, *, shuffle = true, order = "global", window = DEFAULT_WINDOW,
                        read_ahead = false, seed = 0, epoch = 0, rank = 0, world_size = 1, threads = None, prefetch = None,
                        flip = true, crop = 0.0, color_jitter = 0.0, grey = 0.0, drop_last = true, skip_corrupt = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        datasets: &Bound<'_, PyAny>,
        batch_size: usize,
        image_size: u32,
        shuffle: bool,
        order: &str,
        window: u32,
        read_ahead: bool,
        seed: u64,
        epoch: u64,
        rank: usize,
        world_size: usize,
        threads: Option<usize>,
        prefetch: Option<usize>,
        flip: bool,
        crop: f32,
        color_jitter: f32,
        grey: f32,
        drop_last: bool,
        skip_corrupt: bool,
    ) -> PyResult<Self> {
        let order = match order {
            "global" => Order::Global,
            "quasi-random" | "quasi_random" => Order::QuasiRandom { window },
            other => {
                return Err(PyValueError::new_err(format!("order '{other}' is not one of 'global', 'quasi-random'")))
            }
        };
        let workers = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let cfg = LoaderConfig {
            batch_size,
            image_size,
            workers,
            prefetch: prefetch.unwrap_or(2 * workers),
            shuffle,
            seed,
            augment: Augment { flip, crop, color_jitter, grey },
            rank,
            world_size,
            drop_last,
            skip_corrupt,
            order,
            fetch: if read_ahead { Fetch::READ_AHEAD } else { Fetch::Mapped },
            page_bytes: DEFAULT_PAGE_BYTES,
        };
        let sets = datasets_of(py, datasets)?;
        let inner = py.detach(|| facekit_data::Loader::new(sets, cfg)).map_err(from_data)?;
        Ok(Loader {
            inner: Arc::new(inner),
            epoch,
            batch: 0,
            running: Mutex::new(None),
            seen_corrupt: 0,
            corrupt_skipped: 0,
            corrupt: Vec::new(),
        })
    }

    /// Batches per epoch for this rank.
    fn __len__(&self) -> usize {
        self.inner.batches_per_epoch() as usize
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next batch of the current epoch; at its end, StopIteration, and the loader moves to
    /// the next epoch. A corrupt record raises `CorruptRecordError` (unless `skip_corrupt`); the
    /// position stays on the failing batch.
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Batch>> {
        let (loader, epoch, batch) = (&self.inner, self.epoch, self.batch);
        let running = self.running.get_mut().expect("the loader's lock is never poisoned");
        let it = running.get_or_insert_with(|| loader.epoch(epoch, batch));
        let next = py.detach(|| it.next());
        self.take_corrupt(py)?;
        match next {
            None => {
                self.set_position(self.epoch + 1, 0);
                Ok(None)
            }
            Some(Err(e)) => {
                *self.running.get_mut().expect("never poisoned") = None;
                self.seen_corrupt = 0;
                Err(from_data(e))
            }
            Some(Ok(b)) => {
                self.batch += 1;
                Batch::new(py, b, epoch, batch).map(Some)
            }
        }
    }

    /// The epoch the next batch comes from.
    #[getter]
    fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Starts epoch `epoch` from its first batch (as `DistributedSampler.set_epoch`).
    fn set_epoch(&mut self, epoch: u64) {
        self.set_position(epoch, 0);
    }

    /// The loader's position and what it depends on: `epoch`, `batch` (the next batch of that
    /// epoch to yield), and the settings that decide the batches (`seed`, `batch_size`,
    /// `world_size`, `records`, `order`, `shuffle`), which `load_state_dict` checks. Plain ints
    /// and strings: it goes into a torch checkpoint or JSON as it is.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.config();
        let d = PyDict::new(py);
        d.set_item("version", STATE_VERSION)?;
        d.set_item("epoch", self.epoch)?;
        d.set_item("batch", self.batch)?;
        d.set_item("seed", c.seed)?;
        d.set_item("batch_size", c.batch_size)?;
        d.set_item("world_size", c.world_size)?;
        d.set_item("rank", c.rank)?;
        d.set_item("records", self.inner.len())?;
        d.set_item("order", format!("{:?}", c.order))?;
        d.set_item("shuffle", c.shuffle)?;
        Ok(d)
    }

    /// Moves the loader to the position of `state` (from `state_dict()`): the next batch is the
    /// one an uninterrupted loader would have yielded there. Refuses a state whose settings
    /// differ (other seed, batch size, world size, data, order), which would give other batches.
    /// Its rank may differ: ranks advance together, so rank 0's state serves every rank.
    fn load_state_dict(&mut self, state: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = state.py();
        let mine = self.state_dict(py)?;
        for key in ["version", "seed", "batch_size", "world_size", "records", "order", "shuffle"] {
            let (theirs, ours) = (get(state, key)?, get(&mine, key)?);
            if !theirs.eq(&ours)? {
                return Err(PyValueError::new_err(format!(
                    "the loader state was saved with {key} = {theirs}, this loader has {ours}: it would not continue the same batches"
                )));
            }
        }
        let epoch: u64 = get(state, "epoch")?.extract()?;
        let batch: u64 = get(state, "batch")?.extract()?;
        if batch > self.inner.batches_per_epoch() {
            return Err(PyValueError::new_err(format!(
                "the loader state's batch {batch} is beyond the epoch's {} batches",
                self.inner.batches_per_epoch()
            )));
        }
        self.set_position(epoch, batch);
        Ok(())
    }

    /// Total records over all datasets.
    #[getter]
    fn records(&self) -> u64 {
        self.inner.len()
    }

    /// Number of classes in the combined label space (labels are `0..num_classes`, -1 unknown).
    #[getter]
    fn num_classes(&self) -> u32 {
        self.inner.num_classes()
    }

    /// Offset added to each dataset's class ids (all zero when they share one label map).
    #[getter]
    fn class_offsets(&self) -> Vec<u32> {
        self.inner.class_offsets().to_vec()
    }

    /// Batch slots the ring has allocated so far: it grows only while Python keeps more batches
    /// alive than the ring holds, so a steady consumer sees this stay put.
    #[getter]
    fn slots_allocated(&self) -> u64 {
        self.inner.slot_stats().allocated
    }

    /// Corrupt records skipped so far (with `skip_corrupt`), over all epochs.
    #[getter]
    fn corrupt_skipped(&self) -> u64 {
        self.corrupt_skipped
    }

    /// The latest skipped corrupt records (at most 100): `(shard, record, offset, message)`.
    #[getter]
    fn corrupt_records(&self) -> Vec<(String, u64, u64, String)> {
        self.corrupt.clone()
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "facekit.Loader(records={}, batch_size={}, image_size={}, rank={}, world_size={}, epoch={}, batch={})",
            self.inner.len(),
            c.batch_size,
            c.image_size,
            c.rank,
            c.world_size,
            self.epoch,
            self.batch
        )
    }
}

impl Loader {
    fn set_position(&mut self, epoch: u64, batch: u64) {
        *self.running.get_mut().expect("never poisoned") = None;
        self.seen_corrupt = 0;
        self.epoch = epoch;
        self.batch = batch;
    }

    /// Lists the corrupt records the running iterator skipped since last asked, and warns
    /// (`facekit.CorruptRecordWarning`) once for each: a skip is never silent.
    fn take_corrupt(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(it) = self.running.get_mut().expect("never poisoned").as_ref() else { return Ok(()) };
        let stats = it.stats();
        let new = stats.corrupt_skipped - self.seen_corrupt;
        self.seen_corrupt = stats.corrupt_skipped;
        self.corrupt_skipped += new;
        let listed = stats.corrupt.len().min(new as usize);
        let fresh: Vec<_> = stats.corrupt[stats.corrupt.len() - listed..]
            .iter()
            .map(|c| (c.record.shard.display().to_string(), c.record.record, c.record.offset, c.error.clone()))
            .collect();
        for (_, _, _, message) in &fresh {
            PyErr::warn(
                py,
                &py.get_type::<CorruptRecordWarning>(),
                &std::ffi::CString::new(format!("skipped: {message}")).unwrap_or_default(),
                1,
            )?;
        }
        self.corrupt.extend(fresh);
        let excess = self.corrupt.len().saturating_sub(MAX_CORRUPT_LISTED);
        self.corrupt.drain(..excess);
        Ok(())
    }
}

/// Item `k` of a loader state.
fn get<'py>(d: &Bound<'py, PyDict>, k: &str) -> PyResult<Bound<'py, PyAny>> {
    d.get_item(k)?.ok_or_else(|| PyValueError::new_err(format!("the loader state has no '{k}'")))
}

/// The datasets a `Loader` is given: a `Dataset`, a path, or a list of them.
fn datasets_of(py: Python<'_>, arg: &Bound<'_, PyAny>) -> PyResult<Vec<Arc<facekit_shard::Dataset>>> {
    let one = |x: &Bound<'_, PyAny>| -> PyResult<Arc<facekit_shard::Dataset>> {
        if let Ok(d) = x.cast::<Dataset>() {
            return Ok(d.get().inner.clone());
        }
        let path: PathBuf =
            x.extract().map_err(|_| PyTypeError::new_err("a loader reads facekit.Dataset objects or dataset paths"))?;
        Ok(Py::new(py, Dataset::open(path)?)?.get().inner.clone())
    };
    if x_is_single(arg) {
        return Ok(vec![one(arg)?]);
    }
    arg.try_iter()?.map(|x| one(&x?)).collect()
}

/// A lone dataset or path, rather than a list of them.
fn x_is_single(arg: &Bound<'_, PyAny>) -> bool {
    arg.is_instance_of::<Dataset>()
        || arg.is_instance_of::<pyo3::types::PyString>()
        || arg.hasattr("__fspath__").unwrap_or(false)
}
