//! `facekit.Tensor`: bytes owned by Rust (a batch slot of the loader's ring, or a small vector of
//! labels) that numpy and torch take without a copy, through numpy's `__array_interface__` and
//! DLPack's `__dlpack__`. Whoever takes the memory keeps a reference to the tensor, so the bytes
//! (and the ring slot behind them) live until the last array or torch tensor over them is gone;
//! then the slot goes back to the ring.

use facekit_data::Slot;
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict, PyTuple};
use std::ffi::{c_void, CStr};

/// The element types a tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// Pixels.
    U8,
    /// Labels, record numbers (-1 where unknown).
    I64,
    /// Flags (one byte each, 0 or 1).
    Bool,
}

impl DType {
    fn itemsize(self) -> usize {
        match self {
            DType::U8 | DType::Bool => 1,
            DType::I64 => 8,
        }
    }

    /// numpy's array-interface type string.
    fn typestr(self) -> &'static str {
        match self {
            DType::U8 => "|u1",
            DType::I64 => "<i8",
            DType::Bool => "|b1",
        }
    }

    /// DLPack's (type code, bits): kDLInt 0, kDLUInt 1, kDLBool 6.
    fn dl(self) -> (u8, u8) {
        match self {
            DType::U8 => (1, 8),
            DType::I64 => (0, 64),
            DType::Bool => (6, 8),
        }
    }
}

/// The memory behind a tensor.
enum Storage {
    /// A batch slot of the loader's ring: given back when the tensor is dropped.
    Slot(Slot),
    /// Bytes of its own (labels, a decoded record).
    Bytes(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Slot(s) => s.bytes(),
            Storage::Bytes(v) => v,
        }
    }
}

/// A read-only, C-contiguous array of bytes owned by facekit: `numpy.asarray(t)` and
/// `torch.from_dlpack(t)` view it without copying.
#[pyclass(module = "facekit", frozen)]
pub struct Tensor {
    storage: Storage,
    shape: Vec<i64>,
    dtype: DType,
}

impl Tensor {
    /// The images of a batch, `n x size x size x 3`, in their ring slot.
    pub fn images(slot: Slot, n: usize, size: u32) -> Self {
        let s = i64::from(size);
        Tensor { storage: Storage::Slot(slot), shape: vec![n as i64, s, s, 3], dtype: DType::U8 }
    }

    /// A vector of `i64`.
    pub fn i64s(values: &[i64]) -> Self {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor { storage: Storage::Bytes(bytes), shape: vec![values.len() as i64], dtype: DType::I64 }
    }

    /// A vector of flags.
    pub fn bools(values: &[bool]) -> Self {
        Tensor {
            storage: Storage::Bytes(values.iter().map(|&b| u8::from(b)).collect()),
            shape: vec![values.len() as i64],
            dtype: DType::Bool,
        }
    }

    /// An `height x width x 3` RGB image of its own.
    pub fn image(pixels: Vec<u8>, width: u32, height: u32) -> Self {
        Tensor {
            storage: Storage::Bytes(pixels),
            shape: vec![i64::from(height), i64::from(width), 3],
            dtype: DType::U8,
        }
    }

    fn data_ptr(&self) -> *const u8 {
        self.storage.bytes().as_ptr()
    }
}

#[pymethods]
impl Tensor {
    /// The shape, as a tuple.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.shape)
    }

    /// numpy's name of the element type (`uint8`, `int64`, `bool`).
    #[getter]
    fn dtype(&self) -> &'static str {
        match self.dtype {
            DType::U8 => "uint8",
            DType::I64 => "int64",
            DType::Bool => "bool",
        }
    }

    /// Length of the first dimension.
    fn __len__(&self) -> usize {
        self.shape.first().copied().unwrap_or(0) as usize
    }

    /// Size in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.shape.iter().product::<i64>() as usize * self.dtype.itemsize()
    }

    /// numpy's array interface (version 3): the data pointer, read-only, and no strides
    /// (C-contiguous). numpy keeps this tensor as the array's base.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", PyTuple::new(py, &self.shape)?)?;
        d.set_item("typestr", self.dtype.typestr())?;
        d.set_item("data", (self.data_ptr() as usize, true))?;
        d.set_item("strides", py.None())?;
        Ok(d)
    }

    /// DLPack's device: the CPU (kDLCPU = 1), device 0.
    fn __dlpack_device__(&self) -> (i32, i32) {
        (1, 0)
    }

    /// A DLPack capsule over the bytes (`torch.from_dlpack(t)`, `numpy.from_dlpack(t)`). The
    /// consumer holds a reference to this tensor until it calls the capsule's deleter. Only the
    /// unversioned capsule (`dltensor`) is made, which every consumer still accepts; a consumer
    /// that wants a copy or another device is refused.
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__<'py>(
        slf: &Bound<'py, Self>,
        stream: Option<Bound<'py, PyAny>>,
        max_version: Option<Bound<'py, PyAny>>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = (stream, max_version);
        if dl_device.is_some_and(|d| d != (1, 0)) {
            return Err(PyBufferError::new_err(
                "a facekit tensor lives in host memory (device (1, 0)); copy it to the device afterwards",
            ));
        }
        if copy == Some(true) {
            return Err(PyBufferError::new_err(
                "a facekit tensor is exported without a copy (copy=True is not supported)",
            ));
        }
        dlpack::capsule(slf)
    }

    fn __repr__(&self) -> String {
        format!("facekit.Tensor(shape={:?}, dtype={})", self.shape, self.dtype())
    }
}

/// DLPack's unversioned ABI (dlpack.h, v0.8): the structs a consumer reads, and the capsule.
mod dlpack {
    use super::*;

    #[repr(C)]
    struct DLDevice {
        device_type: i32,
        device_id: i32,
    }

    #[repr(C)]
    struct DLDataType {
        code: u8,
        bits: u8,
        lanes: u16,
    }

    #[repr(C)]
    struct DLTensor {
        data: *mut c_void,
        device: DLDevice,
        ndim: i32,
        dtype: DLDataType,
        shape: *mut i64,
        strides: *mut i64,
        byte_offset: u64,
    }

    #[repr(C)]
    struct DLManagedTensor {
        dl_tensor: DLTensor,
        manager_ctx: *mut c_void,
        deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
    }

    /// What a capsule keeps alive: the tensor (so its bytes stay put) and the shape array the
    /// `DLTensor` points into.
    struct Context {
        _owner: Py<Tensor>,
        shape: Vec<i64>,
    }

    const NAME: &CStr = c"dltensor";
    const USED: &CStr = c"used_dltensor";

    pub(super) fn capsule<'py>(slf: &Bound<'py, Tensor>) -> PyResult<Bound<'py, PyAny>> {
        let t = slf.get();
        let mut ctx = Box::new(Context { _owner: slf.clone().unbind(), shape: t.shape.clone() });
        let (code, bits) = t.dtype.dl();
        let tensor = DLTensor {
            data: t.data_ptr() as *mut c_void,
            device: DLDevice { device_type: 1, device_id: 0 },
            ndim: ctx.shape.len() as i32,
            dtype: DLDataType { code, bits, lanes: 1 },
            shape: ctx.shape.as_mut_ptr(),
            strides: std::ptr::null_mut(),
            byte_offset: 0,
        };
        let managed = Box::into_raw(Box::new(DLManagedTensor {
            dl_tensor: tensor,
            manager_ctx: Box::into_raw(ctx).cast(),
            deleter: Some(deleter),
        }));
        // SAFETY: `managed` is a valid pointer owned by the capsule from here on; the destructor
        // frees it unless a consumer renamed the capsule (it then owns it and calls `deleter`).
        unsafe {
            let raw = pyo3::ffi::PyCapsule_New(managed.cast(), NAME.as_ptr(), Some(destructor));
            if raw.is_null() {
                deleter(managed);
                return Err(PyErr::fetch(slf.py()));
            }
            Ok(Bound::from_owned_ptr(slf.py(), raw).cast_into_unchecked::<PyCapsule>().into_any())
        }
    }

    /// Frees the managed tensor and lets go of the Python tensor (the consumer calls it when
    /// its array is gone, possibly without the GIL).
    unsafe extern "C" fn deleter(managed: *mut DLManagedTensor) {
        if managed.is_null() {
            return;
        }
        let managed = Box::from_raw(managed);
        let ctx = Box::from_raw(managed.manager_ctx.cast::<Context>());
        Python::attach(|_py| drop(ctx));
    }

    /// The capsule's destructor: frees the tensor only if no consumer took it.
    unsafe extern "C" fn destructor(capsule: *mut pyo3::ffi::PyObject) {
        if pyo3::ffi::PyCapsule_IsValid(capsule, USED.as_ptr()) == 1 {
            return;
        }
        let managed = pyo3::ffi::PyCapsule_GetPointer(capsule, NAME.as_ptr()).cast::<DLManagedTensor>();
        if managed.is_null() {
            pyo3::ffi::PyErr_Clear();
            return;
        }
        deleter(managed);
    }
}
