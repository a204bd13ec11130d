//! `facekit.DatasetWriter`: a facekit dataset written from Python, through
//! `facekit_shard::DatasetWriter` (shards renamed into place only once complete and fsynced, the
//! manifest last), under the dataset's exclusive lock. Images come as encoded bytes (checked to
//! decode to the dataset's size, with the decoder the loader uses) or as arrays (encoded here).

use crate::dataset::json_to_py;
use crate::errors::{from_shard, FacekitError};
use facekit_shard::manifest::{EncodingInfo, LabelEntry, SourceInfo};
use facekit_shard::{DatasetPaths, Encoding, Gender, LabelMap, Labels, Manifest, Record};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::collections::HashMap;
use std::path::PathBuf;

/// Default shard size, as `facekit pack`'s.
const DEFAULT_SHARD_BYTES: u64 = 256 << 20;

/// One source (a collection of identities) and the identities it has been given so far.
struct Source {
    name: String,
    class_offset: u32,
    identities: HashMap<String, u32>,
    records: u64,
}

/// Writes a facekit dataset. Use it as a context manager (the dataset is complete only after
/// `close()`, which writes the label map and, last, the manifest).
#[pyclass(module = "facekit")]
pub struct DatasetWriter {
    inner: Option<facekit_shard::DatasetWriter>,
    /// Held until `close()`: no other writer replaces the dataset, no reader opens it half-written.
    lock: Option<facekit_io::lock::Lock>,
    encoding: Encoding,
    quality: u8,
    width: u32,
    height: u32,
    sources: Vec<Source>,
    /// Class ids given so far (ids are 0, 1, 2, ... in order of first appearance).
    classes: Vec<(usize, String)>,
    records: u64,
}

#[pymethods]
impl DatasetWriter {
    /// See `facekit/_facekit.pyi`.
    #[new]
    #[pyo3(signature = (path, image_size, *, encoding = "jpeg", quality = 95, shard_size = DEFAULT_SHARD_BYTES))]
    fn new(
        path: PathBuf,
        image_size: &Bound<'_, PyAny>,
        encoding: &str,
        quality: u8,
        shard_size: u64,
    ) -> PyResult<Self> {
        let (width, height): (u32, u32) = match image_size.extract::<u32>() {
            Ok(side) => (side, side),
            Err(_) => image_size
                .extract()
                .map_err(|_| PyTypeError::new_err("image_size is a side in pixels or a (width, height) pair"))?,
        };
        if width == 0 || height == 0 || width > u32::from(u16::MAX) || height > u32::from(u16::MAX) {
            return Err(PyValueError::new_err(format!(
                "image size {width}x{height} is out of range (1 to 65535 a side)"
            )));
        }
        let encoding = match encoding {
            "jpeg" => Encoding::Jpeg,
            "png" => Encoding::Png,
            "raw" => Encoding::Raw,
            other => {
                return Err(PyValueError::new_err(format!("encoding '{other}' is not one of 'jpeg', 'png', 'raw'")))
            }
        };
        if !(1..=100).contains(&quality) {
            return Err(PyValueError::new_err(format!("JPEG quality {quality} is outside 1..=100")));
        }
        let paths = DatasetPaths::new(&path);
        let what = format!("dataset {}", path.display());
        let lock =
            facekit_io::lock::exclusive(&paths.lock(), &what).map_err(|e| FacekitError::new_err(e.to_string()))?;
        let inner = facekit_shard::DatasetWriter::create(paths, shard_size).map_err(from_shard)?;
        Ok(DatasetWriter {
            inner: Some(inner),
            lock: Some(lock),
            encoding,
            quality,
            width,
            height,
            sources: Vec::new(),
            classes: Vec::new(),
            records: 0,
        })
    }

    /// Appends one face and returns its record number. See `facekit/_facekit.pyi`.
    #[pyo3(signature = (image, identity = None, *, source = "default", gender = None, age = None, path = ""))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments, one each
    fn add(
        &mut self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        identity: Option<&str>,
        source: &str,
        gender: Option<u8>,
        age: Option<u16>,
        path: &str,
    ) -> PyResult<u64> {
        let gender = match gender {
            None => None,
            Some(0) => Some(Gender::Male),
            Some(1) => Some(Gender::Female),
            Some(g) => return Err(PyValueError::new_err(format!("gender {g} is not 0 (male), 1 (female) or None"))),
        };
        if age == Some(facekit_shard::format::UNKNOWN_AGE) {
            return Err(PyValueError::new_err(format!(
                "age {} is the format's code for unknown: pass None",
                facekit_shard::format::UNKNOWN_AGE
            )));
        }
        let data = self.payload(py, image)?;
        let (source_id, class_id) = self.label(source, identity)?;
        let record = Record {
            labels: Labels { class_id, source: source_id, gender, age },
            encoding: self.encoding,
            width: self.width as u16,
            height: self.height as u16,
            origin_sha256: [0; 16],
            path: path.to_owned(),
            data,
        };
        let inner = self.inner.as_mut().ok_or_else(|| PyValueError::new_err("the writer is closed"))?;
        py.detach(|| inner.push(&record)).map_err(from_shard)?;
        self.sources[source_id as usize].records += 1;
        self.records += 1;
        Ok(self.records - 1)
    }

    /// Completes the last shard, writes the label map and then the manifest, and returns the
    /// manifest as a dict. Only now is the dataset complete.
    fn close<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.take().ok_or_else(|| PyValueError::new_err("the writer is already closed"))?;
        let sources = self
            .sources
            .iter()
            .enumerate()
            .map(|(id, s)| SourceInfo {
                id: id as u16,
                name: s.name.clone(),
                class_offset: s.class_offset,
                classes: s.identities.len() as u32,
                records: s.records,
            })
            .collect();
        let encoding = EncodingInfo {
            format: self.encoding,
            quality: (self.encoding == Encoding::Jpeg).then_some(self.quality),
            chroma: None,
            width: self.width,
            height: self.height,
        };
        let manifest = Manifest::new(self.classes.len() as u32, sources, None, encoding);
        let entries = self
            .classes
            .iter()
            .enumerate()
            .map(|(id, (s, identity))| LabelEntry {
                class_id: id as u32,
                source: self.sources[*s].name.clone(),
                identity: identity.clone(),
            })
            .collect();
        let labels = LabelMap { entries };
        let manifest = py.detach(|| inner.finish(manifest, &labels)).map_err(from_shard)?;
        self.lock = None;
        json_to_py(py, &serde_json::to_string(&manifest).expect("a manifest serialises"))
    }

    /// Records written so far.
    fn __len__(&self) -> usize {
        self.records as usize
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Closes the dataset when the block ends normally; after an exception it writes no
    /// manifest, so the unfinished dataset is never taken for a complete one.
    fn __exit__(
        &mut self,
        py: Python<'_>,
        kind: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if kind.is_none() && self.inner.is_some() {
            self.close(py)?;
        }
        self.inner = None;
        self.lock = None;
        Ok(false)
    }
}

impl DatasetWriter {
    /// The record's payload: encoded bytes as given (after checking that they decode to the
    /// dataset's size), or an array encoded here.
    fn payload(&self, py: Python<'_>, image: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
        let (w, h) = (self.width as u16, self.height as u16);
        if let Ok(bytes) = image.cast::<PyBytes>() {
            let data = bytes.as_bytes().to_vec();
            let (dw, dh) =
                py.detach(|| facekit_data::codec::decoded_size(self.encoding, &data, w, h)).map_err(|e| {
                    PyValueError::new_err(format!(
                        "the image bytes do not decode as {:?} of {w}x{h}: {e}",
                        self.encoding
                    ))
                })?;
            if (dw, dh) != (u32::from(w), u32::from(h)) {
                return Err(PyValueError::new_err(format!("the image is {dw}x{dh}, the dataset's images are {w}x{h}")));
            }
            return Ok(data);
        }
        let pixels = array_pixels(py, image, self.width, self.height)?;
        py.detach(|| encode(&pixels, self.width, self.height, self.encoding, self.quality))
            .map_err(PyValueError::new_err)
    }

    /// The source number and class id of a record; a new identity gets the next class id. The
    /// manifest gives each source one range of class ids, so a source's identities come together.
    fn label(&mut self, source: &str, identity: Option<&str>) -> PyResult<(u16, Option<u32>)> {
        let s = match self.sources.iter().position(|x| x.name == source) {
            Some(s) => s,
            None => {
                if self.sources.len() > usize::from(u16::MAX) {
                    return Err(PyValueError::new_err("a dataset holds at most 65536 sources"));
                }
                let class_offset = self.classes.len() as u32;
                self.sources.push(Source {
                    name: source.to_owned(),
                    class_offset,
                    identities: HashMap::new(),
                    records: 0,
                });
                self.sources.len() - 1
            }
        };
        let Some(identity) = identity else { return Ok((s as u16, None)) };
        if let Some(&c) = self.sources[s].identities.get(identity) {
            return Ok((s as u16, Some(c)));
        }
        let next = self.classes.len() as u32;
        let src = &mut self.sources[s];
        if src.identities.is_empty() {
            src.class_offset = next;
        } else if src.class_offset + src.identities.len() as u32 != next {
            return Err(PyValueError::new_err(format!(
                "identity '{identity}' is new to source '{source}' after another source's new identities: \
                 each source's identities take one range of class ids, so add a source's new identities together"
            )));
        }
        src.identities.insert(identity.to_owned(), next);
        self.classes.push((s, identity.to_owned()));
        Ok((s as u16, Some(next)))
    }
}

/// The pixels of a height x width x 3 uint8 array (anything numpy takes), checked against the
/// dataset's size.
fn array_pixels(py: Python<'_>, image: &Bound<'_, PyAny>, width: u32, height: u32) -> PyResult<Vec<u8>> {
    let np = py.import("numpy")?;
    let array = np
        .call_method1("asarray", (image,))
        .map_err(|_| PyTypeError::new_err("an image is encoded bytes or a height x width x 3 uint8 array"))?;
    let dtype: String = array.getattr("dtype")?.str()?.extract()?;
    let shape: Vec<usize> = array.getattr("shape")?.extract()?;
    if dtype != "uint8" || shape != [height as usize, width as usize, 3] {
        return Err(PyValueError::new_err(format!(
            "the image array is {dtype} of shape {shape:?}, the dataset needs uint8 of shape ({height}, {width}, 3)"
        )));
    }
    let contiguous = np.call_method1("ascontiguousarray", (array,))?;
    contiguous.call_method0("tobytes")?.extract()
}

/// Encodes RGB8 pixels as the dataset's encoding.
fn encode(pixels: &[u8], width: u32, height: u32, encoding: Encoding, quality: u8) -> Result<Vec<u8>, String> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    match encoding {
        Encoding::Raw => out.extend_from_slice(pixels),
        Encoding::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .write_image(pixels, width, height, image::ExtendedColorType::Rgb8)
            .map_err(|e| format!("cannot encode the image as JPEG: {e}"))?,
        Encoding::Png => image::codecs::png::PngEncoder::new(&mut out)
            .write_image(pixels, width, height, image::ExtendedColorType::Rgb8)
            .map_err(|e| format!("cannot encode the image as PNG: {e}"))?,
        Encoding::RawZstd => return Err("raw-zstd is not written from Python".into()),
    }
    Ok(out)
}
