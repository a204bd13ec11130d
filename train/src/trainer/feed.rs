//! The device feed: a loader's batch, already decoded into a slot of the ring, onto the training
//! device without the training thread waiting or allocating.
//!
//! - The slots are page-locked on CUDA ([`TrainerAlloc`]), so the GPU's copy engine reads them
//!   directly and the host does not wait for the copy.
//! - Each batch's pixels and labels are copied on a side stream into one of two fixed device
//!   buffers, alternating (fixed addresses are what a captured CUDA graph needs); the copy of
//!   batch `j` waits on an event that the training stream recorded after the last use of the same
//!   buffer by batch `j - 2`, and the training stream waits on an event of the copy. Neither
//!   wait involves the host.
//! - The pixels are normalised on the training stream into a fixed float buffer of the run's
//!   memory format, exactly as [`crate::run::numerics::batch_to_device`] does.
//! - A batch handed back with [`Feed::retire`] keeps its slot until its copy's event has
//!   completed; the feed asks (never waits) each time a batch comes or goes, and then drops it,
//!   which gives the slot back to the ring.
//!
//! The ordering is written once over [`Queue`] ("streams and events"): [`CudaQueue`] runs it on
//! the GPU through `cuda_shim.cpp`, [`CpuQueue`] on the CPU, where every copy is done when
//! issued, and the tests drive it with a queue whose events complete when they say so.

use super::layout::MemoryFormat;
use crate::loss::BatchLabels;
use crate::run::numerics::Numerics;
use anyhow::{bail, Context, Result};
use facekit_data::{Batch, HostAlloc, SlotAlloc, SlotMemory, SLOT_ALIGN};
use std::any::Any;
use std::collections::VecDeque;
use std::ffi::{c_void, CStr};
use std::os::raw::{c_char, c_int};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn facekit_cuda_last_error() -> *const c_char;
    fn facekit_cuda_stream_from_pool(device: c_int, out: *mut i64) -> c_int;
    fn facekit_cuda_stream_current(device: c_int, out: *mut i64) -> c_int;
    fn facekit_cuda_copy_on(stream: *const i64, dst: *mut C_tensor, src: *const C_tensor) -> c_int;
    fn facekit_cuda_event_new(out: *mut *mut c_void) -> c_int;
    fn facekit_cuda_event_free(event: *mut c_void);
    fn facekit_cuda_event_record(event: *mut c_void, stream: *const i64) -> c_int;
    fn facekit_cuda_event_block(event: *const c_void, stream: *const i64) -> c_int;
    fn facekit_cuda_event_query(event: *const c_void, done: *mut c_int) -> c_int;
    fn facekit_cuda_set_sync_debug_mode(mode: c_int) -> c_int;
}

/// A shim call's return code as a result, with the C++ message.
fn check(rc: c_int, what: &str) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: the shim keeps a NUL-terminated thread-local message alive until its next failure.
    let msg = unsafe { CStr::from_ptr(facekit_cuda_last_error()) }.to_string_lossy().into_owned();
    bail!("{what}: {msg}")
}

// ---------------------------------------------------------------------------------------------
// Pinned slots

/// The trainer's slot allocator: page-locked memory when the run's device is CUDA (the GPU copies
/// from it without the host waiting), plain host memory otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrainerAlloc {
    /// `cudaHostAlloc` memory through libtorch's pinned allocator, for this CUDA device.
    Pinned(Device),
    /// [`HostAlloc`].
    Host,
}

impl TrainerAlloc {
    /// The allocator for a run on `device`.
    pub fn for_device(device: Device) -> Self {
        match device {
            Device::Cuda(_) => TrainerAlloc::Pinned(device),
            _ => TrainerAlloc::Host,
        }
    }
}

impl SlotAlloc for TrainerAlloc {
    fn alloc(&self, len: usize) -> std::result::Result<Box<dyn SlotMemory>, String> {
        match *self {
            TrainerAlloc::Pinned(device) => PinnedMemory::new(len, device).map(|m| Box::new(m) as Box<dyn SlotMemory>),
            TrainerAlloc::Host => HostAlloc.alloc(len),
        }
    }
}

/// A page-locked region: a pinned uint8 tensor, of which the [`SLOT_ALIGN`]-aligned `len` bytes
/// from `offset` are the slot.
pub(crate) struct PinnedMemory {
    tensor: Tensor,
    ptr: *mut u8,
    offset: usize,
    len: usize,
}

// SAFETY: the tensor is never used through libtorch after construction except to make views
// (`host_view`), which read its fixed storage pointer; the bytes themselves are reached through
// `bytes`/`bytes_mut`, whose borrows the ring serialises (one owner per slot).
unsafe impl Send for PinnedMemory {}
unsafe impl Sync for PinnedMemory {}

impl PinnedMemory {
    /// `len` zeroed page-locked bytes for copies to `device`.
    pub fn new(len: usize, device: Device) -> std::result::Result<Self, String> {
        let total = (len + SLOT_ALIGN) as i64;
        let host = Tensor::f_zeros([total], (Kind::Uint8, Device::Cpu)).map_err(|e| e.to_string())?;
        let tensor = host.f_pin_memory(device).map_err(|e| format!("cannot pin {total} bytes of host memory: {e}"))?;
        let base = tensor.data_ptr() as *mut u8;
        let offset = (base as usize).next_multiple_of(SLOT_ALIGN) - base as usize;
        // SAFETY: offset < SLOT_ALIGN and the tensor holds len + SLOT_ALIGN bytes.
        let ptr = unsafe { base.add(offset) };
        Ok(PinnedMemory { tensor, ptr, offset, len })
    }

    /// The first `used` bytes as a uint8 tensor sharing the pinned storage (so that CUDA's copy
    /// sees pinned memory and does not wait).
    fn view(&self, used: usize) -> Tensor {
        self.tensor.narrow(0, self.offset as i64, used as i64)
    }
}

impl SlotMemory for PinnedMemory {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points at `len` bytes inside the tensor's storage, alive as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the borrow of `self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A batch's pixels as a host uint8 tensor [n, size, size, 3] over its slot (no copy): the pinned
/// tensor itself when the slot is pinned.
fn host_pixels(batch: &Batch) -> Tensor {
    let s = batch.size as i64;
    let shape = [batch.n as i64, s, s, 3];
    match batch.images.memory().as_any().downcast_ref::<PinnedMemory>() {
        Some(pinned) => pinned.view(batch.images.len()).view(shape),
        // SAFETY: the view is read only while `batch` is borrowed or held by the feed (until its
        // copy completed), and the slot's bytes do not move while the batch lives.
        None => unsafe { Tensor::from_blob(batch.images.as_ptr(), &shape, &[], Kind::Uint8, Device::Cpu) },
    }
}

// ---------------------------------------------------------------------------------------------
// Streams and events

/// Where queued work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The side stream of the feed's copies.
    Copy,
    /// The stream the training step's kernels go to.
    Compute,
}

/// Streams and events as the feed uses them; implemented for CUDA, the CPU and the tests.
pub(crate) trait Queue {
    /// A marker in a lane's queued work.
    type Event;
    /// A new event (complete until first recorded).
    fn event(&mut self) -> Result<Self::Event>;
    /// Moves `event` to the end of the work queued on `lane` so far.
    fn record(&mut self, event: &mut Self::Event, lane: Lane) -> Result<()>;
    /// Work queued on `lane` from now on runs after `event`'s; the host does not wait.
    fn wait(&mut self, lane: Lane, event: &Self::Event) -> Result<()>;
    /// Whether `event`'s work has completed; never waits.
    fn done(&mut self, event: &Self::Event) -> Result<bool>;
    /// Queues `dst.copy_(src)` on the copy lane, without the host waiting for it.
    fn copy(&mut self, dst: &mut Tensor, src: &Tensor) -> Result<()>;
}

/// The CPU's queue: one lane, every copy done when issued, every event complete.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CpuQueue;

impl Queue for CpuQueue {
    type Event = ();
    fn event(&mut self) -> Result<()> {
        Ok(())
    }
    fn record(&mut self, _event: &mut (), _lane: Lane) -> Result<()> {
        Ok(())
    }
    fn wait(&mut self, _lane: Lane, _event: &()) -> Result<()> {
        Ok(())
    }
    fn done(&mut self, _event: &()) -> Result<bool> {
        Ok(true)
    }
    fn copy(&mut self, dst: &mut Tensor, src: &Tensor) -> Result<()> {
        Ok(dst.f_copy_(src)?)
    }
}

/// CUDA's queue: a stream from c10's pool for the copies, the thread's current stream for the
/// step, c10 events between them (`cuda_shim.cpp`).
pub(crate) struct CudaQueue {
    device: c_int,
    copy: [i64; 3],
}

/// An owned `c10::Event` of CUDA.
pub(crate) struct CudaEvent(*mut c_void);

// SAFETY: a c10::Event has no thread affinity; the pointer is owned and freed once.
unsafe impl Send for CudaEvent {}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        // SAFETY: made by facekit_cuda_event_new, freed only here.
        unsafe { facekit_cuda_event_free(self.0) }
    }
}

impl CudaQueue {
    /// The queue of CUDA device `index`, its copy stream taken from c10's pool.
    pub fn new(index: usize) -> Result<Self> {
        let device = index as c_int;
        let mut copy = [0i64; 3];
        // SAFETY: `copy` has room for the three numbers of a packed stream.
        check(
            unsafe { facekit_cuda_stream_from_pool(device, copy.as_mut_ptr()) },
            "cannot get a CUDA stream for the feed's copies",
        )?;
        Ok(CudaQueue { device, copy })
    }

    fn stream(&self, lane: Lane) -> Result<[i64; 3]> {
        match lane {
            Lane::Copy => Ok(self.copy),
            Lane::Compute => {
                let mut s = [0i64; 3];
                // SAFETY: as in `new`.
                check(
                    unsafe { facekit_cuda_stream_current(self.device, s.as_mut_ptr()) },
                    "cannot read the current CUDA stream",
                )?;
                Ok(s)
            }
        }
    }
}

impl Queue for CudaQueue {
    type Event = CudaEvent;
    fn event(&mut self) -> Result<CudaEvent> {
        let mut e = std::ptr::null_mut();
        // SAFETY: the shim writes an owned pointer on success.
        check(unsafe { facekit_cuda_event_new(&mut e) }, "cannot make a CUDA event")?;
        Ok(CudaEvent(e))
    }
    fn record(&mut self, event: &mut CudaEvent, lane: Lane) -> Result<()> {
        let s = self.stream(lane)?;
        // SAFETY: a live event and a packed stream.
        check(unsafe { facekit_cuda_event_record(event.0, s.as_ptr()) }, "cannot record a CUDA event")
    }
    fn wait(&mut self, lane: Lane, event: &CudaEvent) -> Result<()> {
        let s = self.stream(lane)?;
        // SAFETY: as in `record`.
        check(unsafe { facekit_cuda_event_block(event.0, s.as_ptr()) }, "cannot make a CUDA stream wait on an event")
    }
    fn done(&mut self, event: &CudaEvent) -> Result<bool> {
        let mut done = 0;
        // SAFETY: a live event.
        check(unsafe { facekit_cuda_event_query(event.0, &mut done) }, "cannot query a CUDA event")?;
        Ok(done != 0)
    }
    fn copy(&mut self, dst: &mut Tensor, src: &Tensor) -> Result<()> {
        // SAFETY: both tensors are live for the call; the copy engine keeps their storages in use
        // only as long as the feed holds them (the destination always, the source until the
        // copy's event completed).
        check(
            unsafe { facekit_cuda_copy_on(self.copy.as_ptr(), dst.as_mut_ptr(), src.as_ptr()) },
            "cannot queue the batch's copy to the GPU",
        )
    }
}

/// What CUDA's synchronisation debug mode does when the host waits for the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncDebug {
    /// Nothing (the default).
    Off = 0,
    /// A warning from libtorch.
    #[cfg_attr(
        not(all(test, feature = "nccl")),
        expect(dead_code, reason = "only the CUDA build's test asks for warnings")
    )]
    Warn = 1,
    /// An error from the synchronising call.
    Error = 2,
}

/// Sets CUDA's synchronisation debug mode for the process (`torch.cuda.set_sync_debug_mode`);
/// an error in a build without the `nccl` feature, which lacks CUDA's headers.
pub(crate) fn set_sync_debug_mode(mode: SyncDebug) -> Result<()> {
    // SAFETY: plain integer argument.
    check(unsafe { facekit_cuda_set_sync_debug_mode(mode as c_int) }, "cannot set CUDA's sync debug mode")
}

// ---------------------------------------------------------------------------------------------
// The feed

/// The feed as the trainer holds it, whatever its queue.
pub trait Input: Send {
    /// `batch` on the device: the normalised images in the run's memory format and the labels.
    /// The tensors are views of the feed's buffers, valid until the batch after next.
    fn input(&mut self, batch: &Batch) -> Result<(Tensor, BatchLabels)>;
    /// Takes back batches given to [`Input::input`]; each is dropped (its slot returned to the
    /// ring) once its copy has completed.
    fn retire(&mut self, batches: Vec<Batch>) -> Result<()>;
    /// What the feed has allocated and holds.
    fn stats(&self) -> FeedStats;
    /// After `warm_up` more steps, turns CUDA's sync debug mode to `error` from each step's first
    /// [`Input::input`] to its [`Input::end_step`]: a step that makes the host wait fails.
    fn watch_syncs(&mut self, warm_up: u64) -> Result<()>;
    /// The training step is queued: the sync debug mode, if watching, is off until the next step
    /// (log points read the device on purpose).
    fn end_step(&mut self) -> Result<()>;
    /// Benchmarks (`--synthetic`): fills both image buffers with random pixels in [-1, 1) once and
    /// from now on feeds them instead of the batches' pixels; labels are drawn from `classes`.
    fn make_synthetic(&mut self, classes: u32) -> Result<()>;
    /// The synthetic batch to train on (its labels; no pixels), after [`Input::make_synthetic`].
    fn synthetic_batch(&self) -> Option<Batch>;
}

/// The feed's memory, to see that it stays fixed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Bytes of the fixed device buffers (pixels, normalised images, labels; both halves).
    pub buffer_bytes: usize,
    /// Host label buffers made (one per copy in flight at the most).
    pub label_buffers: usize,
    /// Batches whose copy is in flight.
    pub in_flight: usize,
    /// Batches handed back and kept until their copy completes.
    pub held: usize,
}

/// One half of the double buffer, on the device.
struct Buffers {
    /// The copied pixels, uint8 NHWC (absent on the CPU: normalisation reads the slot itself).
    pixels: Option<Tensor>,
    /// The normalised images, float, already in the run's memory format.
    images: Tensor,
    /// Class, gender and age rows, int64 [3, batch].
    labels: Tensor,
}

/// A copy in flight: its completion event, the host label buffer it reads, and the batch
/// once retired. Tickets are reused, so events and label buffers are made once.
struct Ticket<E> {
    copied: E,
    labels: Tensor,
    slot: usize,
    batch: Option<Batch>,
}

/// Double-buffered device input over a [`Queue`]. See the module documentation.
pub(crate) struct Feed<Q: Queue> {
    queue: Q,
    device: Device,
    format: MemoryFormat,
    batch: usize,
    size: u32,
    buffers: [Buffers; 2],
    /// Per buffer: recorded on the compute lane after the last batch that read it.
    released: [Q::Event; 2],
    /// The buffer the next batch goes to.
    next: usize,
    in_flight: VecDeque<Ticket<Q::Event>>,
    spare: Vec<Ticket<Q::Event>>,
    label_buffers: usize,
    watch: Option<SyncWatch>,
    /// `--synthetic`'s batch: labels only, its pixels already in the image buffers.
    synthetic: Option<Batch>,
}

/// Where the feed stands in watching steps for synchronisations.
#[derive(Debug, Clone, Copy)]
struct SyncWatch {
    /// Steps still to run before watching.
    warm_up: u64,
    /// Whether the debug mode is `error` now.
    on: bool,
}

impl<Q: Queue> Feed<Q> {
    /// A feed of batches of at most `batch` images of `size` pixels onto `numerics`' device, its
    /// buffers all made now.
    pub fn new(mut queue: Q, numerics: &Numerics, batch: usize, size: u32) -> Result<Self> {
        let device = numerics.device;
        let half = || -> Result<Buffers> {
            let (n, s) = (batch as i64, size as i64);
            let pixels = match device {
                Device::Cpu => None,
                _ => Some(Tensor::f_empty([n, s, s, 3], (Kind::Uint8, device))?),
            };
            let images = match numerics.memory_format {
                MemoryFormat::ChannelsLast => {
                    Tensor::f_empty([n, s, s, 3], (Kind::Float, device))?.permute([0, 3, 1, 2])
                }
                MemoryFormat::Contiguous => Tensor::f_empty([n, 3, s, s], (Kind::Float, device))?,
            };
            Ok(Buffers { pixels, images, labels: Tensor::f_empty([3, n], (Kind::Int64, device))? })
        };
        let buffers = [half().context("cannot allocate the feed's device buffers")?, half()?];
        let released = [queue.event()?, queue.event()?];
        Ok(Feed {
            queue,
            device,
            format: numerics.memory_format,
            batch,
            size,
            buffers,
            released,
            next: 0,
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            label_buffers: 0,
            watch: None,
            synthetic: None,
        })
    }

    /// The queue, for the tests' inspection.
    #[cfg(test)]
    fn queue(&self) -> &Q {
        &self.queue
    }

    /// Drops every batch whose copy has completed, oldest first, without waiting.
    fn poll(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.queue.done(&self.in_flight[i].copied)? {
                let mut t = self.in_flight.remove(i).expect("index checked");
                t.batch = None;
                self.spare.push(t);
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// A ticket for the next copy: a spare one, or a new event and host label buffer (pinned
    /// beside pinned slots) when every ticket is in flight.
    fn ticket(&mut self, slot: usize) -> Result<Ticket<Q::Event>> {
        if let Some(mut t) = self.spare.pop() {
            t.slot = slot;
            return Ok(t);
        }
        let mut labels = Tensor::f_zeros([3, self.batch as i64], (Kind::Int64, Device::Cpu))?;
        if self.device.is_cuda() {
            labels = labels.f_pin_memory(self.device)?;
        }
        self.label_buffers += 1;
        Ok(Ticket { copied: self.queue.event()?, labels, slot, batch: None })
    }

    fn feed(&mut self, batch: &Batch) -> Result<(Tensor, BatchLabels)> {
        if batch.n > self.batch || batch.size != self.size {
            bail!(
                "a batch of {} images of {} pixels does not fit the feed's buffers ({} of {})",
                batch.n,
                batch.size,
                self.batch,
                self.size
            );
        }
        self.poll()?;
        let (b, n) = (self.next, batch.n as i64);
        // Everything that reads the other buffer (the previous batch) is queued by now.
        let (other, rest) = self.released.split_at_mut(1);
        let prev = if b == 0 { &mut rest[0] } else { &mut other[0] };
        self.queue.record(prev, Lane::Compute)?;
        let mut t = self.ticket(batch.images.as_ptr() as usize)?;
        write_labels(&mut t.labels, batch);
        let host = self.synthetic.is_none().then(|| host_pixels(batch));
        // The copy overwrites buffer b only after the training stream is done with batch j - 2.
        self.queue.wait(Lane::Copy, &self.released[b])?;
        let buf = &mut self.buffers[b];
        let pixels = match (host, buf.pixels.as_mut()) {
            (Some(host), Some(p)) => {
                self.queue.copy(&mut p.narrow(0, 0, n), &host)?;
                Some(p.narrow(0, 0, n))
            }
            (host, _) => host,
        };
        // The whole [3, batch] buffer, contiguous on both sides, so a short batch too is one
        // plain asynchronous copy (columns past `n` are stale and never read).
        self.queue.copy(&mut buf.labels, &t.labels)?;
        self.queue.record(&mut t.copied, Lane::Copy)?;
        self.queue.wait(Lane::Compute, &t.copied)?;
        self.in_flight.push_back(t);
        let images = match pixels {
            Some(pixels) => normalise_into(&buf.images.narrow(0, 0, n), &pixels)?,
            None => buf.images.narrow(0, 0, n),
        };
        let labels = BatchLabels {
            class: buf.labels.get(0).narrow(0, 0, n),
            gender: buf.labels.get(1).narrow(0, 0, n),
            age: buf.labels.get(2).narrow(0, 0, n),
        };
        self.next = 1 - b;
        debug_assert!(self.format == MemoryFormat::Contiguous || super::layout::is_channels_last(&images));
        Ok((images, labels))
    }
}

/// Writes the batch's class, gender and age rows into the host label buffer [3, batch].
fn write_labels(labels: &mut Tensor, batch: &Batch) {
    let cols = labels.size()[1] as usize;
    // SAFETY: a contiguous int64 CPU tensor of 3 * cols elements that no copy reads now (its
    // ticket was spare or new), owned by the caller's ticket.
    let rows = unsafe { std::slice::from_raw_parts_mut(labels.data_ptr() as *mut i64, 3 * cols) };
    for (r, v) in [&batch.class, &batch.gender, &batch.age].into_iter().enumerate() {
        rows[r * cols..r * cols + v.len()].copy_from_slice(v);
    }
}

/// `(pixel / 255 - 0.5) / 0.5` of the uint8 NHWC `pixels` into `out` (float NCHW-shaped, either
/// layout), in place: the same operations as `batch_to_device`, so the same values to the bit.
fn normalise_into(out: &Tensor, pixels: &Tensor) -> Result<Tensor> {
    let mut x = out.shallow_clone();
    tch::no_grad(|| -> Result<()> {
        x.f_copy_(&pixels.permute([0, 3, 1, 2]))?;
        let _ = x.f_div_scalar_(127.5)?;
        let _ = x.f_sub_scalar_(1.0)?;
        Ok(())
    })?;
    Ok(x)
}

impl<Q: Queue + Send> Input for Feed<Q>
where
    Q::Event: Send,
{
    fn input(&mut self, batch: &Batch) -> Result<(Tensor, BatchLabels)> {
        if let Some(w) = self.watch.as_mut().filter(|w| w.warm_up == 0 && !w.on) {
            set_sync_debug_mode(SyncDebug::Error)?;
            w.on = true;
        }
        self.feed(batch)
    }

    fn watch_syncs(&mut self, warm_up: u64) -> Result<()> {
        // Fails here, before any work, in a build that cannot set the mode.
        set_sync_debug_mode(SyncDebug::Off)?;
        self.watch = Some(SyncWatch { warm_up, on: false });
        Ok(())
    }

    fn make_synthetic(&mut self, classes: u32) -> Result<()> {
        let shape = self.buffers[0].images.size();
        tch::no_grad(|| -> Result<()> {
            for buf in &mut self.buffers {
                buf.images.f_copy_(&(Tensor::f_rand(shape.as_slice(), (Kind::Float, self.device))? * 2.0 - 1.0))?;
            }
            Ok(())
        })?;
        let n = self.batch;
        // Every class id of the head in turn, both genders, ages 0-89: all labels known.
        let class = (0..n as i64).map(|i| i % i64::from(classes.max(1))).collect();
        let images = facekit_data::Slot::from(Vec::new());
        let (gender, age) = ((0..n as i64).map(|i| i % 2).collect(), (0..n as i64).map(|i| i % 90).collect());
        self.synthetic = Some(Batch {
            n,
            size: self.size,
            images,
            class,
            gender,
            age,
            indices: vec![0; n],
            flipped: vec![false; n],
        });
        Ok(())
    }

    fn synthetic_batch(&self) -> Option<Batch> {
        self.synthetic.clone()
    }

    fn end_step(&mut self) -> Result<()> {
        let Some(w) = self.watch.as_mut() else { return Ok(()) };
        if w.on {
            set_sync_debug_mode(SyncDebug::Off)?;
            w.on = false;
        }
        w.warm_up = w.warm_up.saturating_sub(1);
        Ok(())
    }

    fn retire(&mut self, batches: Vec<Batch>) -> Result<()> {
        for batch in batches {
            let slot = batch.images.as_ptr() as usize;
            match self.in_flight.iter_mut().find(|t| t.slot == slot && t.batch.is_none()) {
                Some(t) => t.batch = Some(batch),
                // Never fed, or its copy already seen complete: nothing reads it.
                None => drop(batch),
            }
        }
        self.poll()
    }

    fn stats(&self) -> FeedStats {
        let bytes = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        let buffer_bytes =
            self.buffers.iter().map(|b| b.pixels.as_ref().map_or(0, bytes) + bytes(&b.images) + bytes(&b.labels)).sum();
        let held = self.in_flight.iter().filter(|t| t.batch.is_some()).count();
        FeedStats { buffer_bytes, label_buffers: self.label_buffers, in_flight: self.in_flight.len(), held }
    }
}

/// The feed for `numerics`' device: CUDA's streams on a GPU, the CPU's otherwise.
pub fn for_device(numerics: &Numerics, batch: usize, size: u32) -> Result<Box<dyn Input>> {
    Ok(match numerics.device {
        Device::Cuda(i) => Box::new(Feed::new(CudaQueue::new(i)?, numerics, batch, size)?),
        _ => Box::new(Feed::new(CpuQueue, numerics, batch, size)?),
    })
}

#[cfg(test)]
mod tests {
    use super::super::config::{MemoryFormatKind, PrecisionKind};
    use super::super::step::labels_to_device;
    use super::*;
    use crate::run::numerics::Numerics;
    use facekit_data::{Loader, LoaderConfig};
    use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
    use facekit_shard::{Dataset, DatasetPaths, DatasetWriter, Encoding, Labels, Manifest, Record};
    use std::sync::Arc;

    /// `dir/ds`: the first `n` LFW photos of /work/shared/data (3 people), as `size` x `size`
    /// raw records with class, gender and age labels.
    fn photos(dir: &std::path::Path, n: usize, size: u32) -> Arc<Dataset> {
        let lfw = facekit_testkit::shared_data().join("lfw100");
        let mut people: Vec<_> = std::fs::read_dir(&lfw).unwrap().map(|e| e.unwrap().path()).collect();
        people.sort();
        let mut files: Vec<(u32, std::path::PathBuf)> = Vec::new();
        for (c, person) in people.iter().take(3).enumerate() {
            let mut f: Vec<_> = std::fs::read_dir(person).unwrap().map(|e| e.unwrap().path()).collect();
            f.sort();
            files.extend(f.into_iter().take(n.div_ceil(3)).map(|p| (c as u32, p)));
        }
        let mut w = DatasetWriter::create(DatasetPaths::new(dir.join("ds")), 1 << 20).unwrap();
        for (i, (class, path)) in files.iter().take(n).enumerate() {
            let img = image::open(path).unwrap().to_rgb8();
            let img = image::imageops::resize(&img, size, size, image::imageops::FilterType::Triangle);
            let gender = Some(if i % 2 == 0 { facekit_shard::Gender::Male } else { facekit_shard::Gender::Female });
            w.push(&Record {
                labels: Labels { class_id: Some(*class), source: 0, gender, age: Some(20 + i as u16) },
                encoding: Encoding::Raw,
                width: size as u16,
                height: size as u16,
                origin_sha256: [0; 16],
                path: path.display().to_string(),
                data: img.into_raw(),
            })
            .unwrap();
        }
        let labels = LabelMap {
            entries: (0..3)
                .map(|c| LabelEntry { class_id: c, source: "lfw".into(), identity: format!("p{c}") })
                .collect(),
        };
        let enc = EncodingInfo { format: Encoding::Raw, quality: None, chroma: None, width: size, height: size };
        let source = SourceInfo { id: 0, name: "lfw".into(), class_offset: 0, classes: 3, records: n as u64 };
        w.finish(Manifest::new(3, vec![source], None, enc), &labels).unwrap();
        Arc::new(Dataset::open(DatasetPaths::new(dir.join("ds"))).unwrap())
    }

    fn loader(ds: Arc<Dataset>, batch: usize, size: u32) -> Loader {
        let cfg = LoaderConfig {
            batch_size: batch,
            image_size: size,
            workers: 1,
            prefetch: 2,
            shuffle: true,
            seed: 3,
            drop_last: false,
            ..LoaderConfig::default()
        };
        Loader::with_alloc(vec![ds], cfg, Arc::new(TrainerAlloc::for_device(Device::Cpu))).unwrap()
    }

    fn cpu(format: MemoryFormatKind) -> Numerics {
        Numerics::new(Device::Cpu, PrecisionKind::Fp32, format)
    }

    /// Events that complete only when the test says so, and a log of what was queued.
    #[derive(Default)]
    struct Manual {
        log: Vec<String>,
        events: usize,
        complete: Vec<bool>,
    }

    impl Manual {
        fn complete_all(&mut self) {
            self.complete.iter_mut().for_each(|c| *c = true);
        }
    }

    impl Queue for Manual {
        type Event = usize;
        fn event(&mut self) -> Result<usize> {
            self.events += 1;
            self.complete.push(true);
            Ok(self.events - 1)
        }
        fn record(&mut self, event: &mut usize, lane: Lane) -> Result<()> {
            self.complete[*event] = false;
            self.log.push(format!("record {event} on {lane:?}"));
            Ok(())
        }
        fn wait(&mut self, lane: Lane, event: &usize) -> Result<()> {
            self.log.push(format!("{lane:?} waits {event}"));
            Ok(())
        }
        fn done(&mut self, event: &usize) -> Result<bool> {
            Ok(self.complete[*event])
        }
        fn copy(&mut self, dst: &mut Tensor, src: &Tensor) -> Result<()> {
            self.log.push(format!("copy {:?}", dst.size()));
            Ok(dst.f_copy_(src)?)
        }
    }

    #[test]
    fn the_trainer_gives_the_loader_pinned_slots_on_cuda_and_host_memory_on_the_cpu() {
        assert_eq!(TrainerAlloc::for_device(Device::Cuda(1)), TrainerAlloc::Pinned(Device::Cuda(1)));
        assert_eq!(TrainerAlloc::for_device(Device::Cpu), TrainerAlloc::Host);
        let t = tempfile::tempdir().unwrap();
        let l = loader(photos(t.path(), 6, 32), 4, 32);
        let batch = l.epoch(0, 0).next().unwrap().unwrap();
        assert!(batch.images.is_from_ring());
        assert!(batch.images.memory().as_any().is::<facekit_data::HostMemory>(), "host slots on the CPU");
        match TrainerAlloc::Pinned(Device::Cuda(0)).alloc(64) {
            Ok(m) => {
                let pinned = m.as_any().downcast_ref::<PinnedMemory>().expect("pinned slots are PinnedMemory");
                assert!(tch::Cuda::is_available() && pinned.tensor.is_pinned(Device::Cuda(0)));
                assert_eq!((m.bytes().len(), m.bytes().as_ptr() as usize % SLOT_ALIGN), (64, 0));
            }
            // Without CUDA, asking for pinned memory is an error naming the pinning, not a crash.
            Err(e) => assert!(!tch::Cuda::is_available() && e.contains("cannot pin 128 bytes"), "{e}"),
        }
    }

    #[test]
    fn the_step_sees_the_slots_pixels_normalised_as_batch_to_device_does() {
        let t = tempfile::tempdir().unwrap();
        let l = loader(photos(t.path(), 10, 32), 4, 32);
        for format in [MemoryFormatKind::Contiguous, MemoryFormatKind::ChannelsLast] {
            let numerics = cpu(format);
            let mut feed = Feed::new(CpuQueue, &numerics, 4, 32).unwrap();
            // Three batches: 4, 4 and the last 2 (a narrower view of the same buffers).
            let batches: Vec<Batch> = l.epoch(1, 0).map(|b| b.unwrap()).collect();
            assert_eq!(batches.iter().map(|b| b.n).collect::<Vec<_>>(), [4, 4, 2]);
            for batch in batches {
                let (xs, labels) = feed.input(&batch).unwrap();
                let want = numerics.input(&batch);
                assert!(xs.equal(&want), "pixels, {format:?}");
                assert_eq!(xs.stride(), want.stride(), "memory format {format:?}");
                let fresh = labels_to_device(&batch, Device::Cpu);
                assert!(
                    labels.class.equal(&fresh.class)
                        && labels.gender.equal(&fresh.gender)
                        && labels.age.equal(&fresh.age)
                );
                Input::retire(&mut feed, vec![batch]).unwrap();
            }
        }
    }

    #[test]
    fn batches_alternate_between_two_fixed_buffers_and_a_copy_waits_for_the_step_that_last_read_its_buffer() {
        let t = tempfile::tempdir().unwrap();
        let l = loader(photos(t.path(), 12, 32), 4, 32);
        let mut feed = Feed::new(Manual::default(), &cpu(MemoryFormatKind::Contiguous), 4, 32).unwrap();
        let mut addresses = Vec::new();
        for batch in l.epoch(0, 0) {
            let batch = batch.unwrap();
            let (xs, labels) = feed.input(&batch).unwrap();
            addresses.push((xs.data_ptr() as usize, labels.class.data_ptr() as usize));
            Input::retire(&mut feed, vec![batch]).unwrap();
            feed.queue.complete_all();
        }
        assert_eq!(addresses.len(), 3);
        assert_ne!(addresses[0], addresses[1]);
        assert_eq!(addresses[0], addresses[2], "the third batch reuses the first buffers");
        // Events 0 and 1 mark the buffers' release, 2.. the copies. Batch 2 goes to buffer 0
        // after waiting on event 0, recorded on the compute lane when batch 1 came (batch 0's
        // work queued); the step waits on the copy, never the host.
        let log = &feed.queue().log;
        let third = log.iter().rposition(|l| l == "record 1 on Compute").unwrap();
        assert_eq!(
            log[third..],
            ["record 1 on Compute", "Copy waits 0", "copy [3, 4]", "record 2 on Copy", "Compute waits 2"],
            "{log:?}"
        );
        assert!(log.iter().position(|l| l == "record 0 on Compute").unwrap() < third);
    }

    #[test]
    fn a_slot_goes_back_to_the_ring_only_after_its_copy_completed() {
        let t = tempfile::tempdir().unwrap();
        let l = loader(photos(t.path(), 12, 32), 4, 32);
        let mut feed = Feed::new(Manual::default(), &cpu(MemoryFormatKind::Contiguous), 4, 32).unwrap();
        let mut epoch = l.epoch(0, 0);
        let first = epoch.next().unwrap().unwrap();
        let _ = feed.input(&first).unwrap();
        Input::retire(&mut feed, vec![first]).unwrap();
        // The copy's event has not completed: the feed keeps the batch, and with it its slot.
        assert_eq!((Input::stats(&feed).held, Input::stats(&feed).in_flight), (1, 1));
        // Retiring again, or the next batch coming, does not release it while the copy runs.
        let second = epoch.next().unwrap().unwrap();
        Input::retire(&mut feed, Vec::new()).unwrap();
        assert_eq!(Input::stats(&feed).held, 1);
        feed.queue.complete_all();
        // Asked (not waited for) when the next batch comes: now the slot is free again.
        let _ = feed.input(&second).unwrap();
        assert_eq!(Input::stats(&feed).held, 0);
        Input::retire(&mut feed, vec![second]).unwrap();
        // The first copy's label buffer served the second.
        assert_eq!(Input::stats(&feed).label_buffers, 1);
    }

    #[test]
    fn an_epoch_through_the_feed_allocates_no_slot_and_no_buffer_after_its_first_batch() {
        let t = tempfile::tempdir().unwrap();
        let l = loader(photos(t.path(), 30, 32), 4, 32);
        let mut feed = for_device(&cpu(MemoryFormatKind::Contiguous), 4, 32).unwrap();
        let before = l.slot_stats();
        let mut after_first = None;
        for epoch in 0..2 {
            for batch in l.epoch(epoch, 0) {
                let batch = batch.unwrap();
                let _ = feed.input(&batch).unwrap();
                feed.retire(vec![batch]).unwrap();
                after_first.get_or_insert(feed.stats());
            }
        }
        assert_eq!(l.slot_stats(), before, "no slot allocated beyond the ring's");
        assert_eq!(l.slot_stats().allocated, l.slot_stats().initial);
        assert_eq!(feed.stats(), after_first.unwrap(), "the feed's buffers stay as they were");
        assert_eq!(feed.stats().label_buffers, 1);
        assert_eq!(feed.stats().buffer_bytes, 2 * (4 * 3 * 32 * 32 * 4 + 3 * 4 * 8));
    }

    #[test]
    fn a_batch_larger_than_the_feeds_buffers_is_an_error_naming_both_sizes() {
        let t = tempfile::tempdir().unwrap();
        let l = loader(photos(t.path(), 6, 32), 6, 32);
        let mut feed = for_device(&cpu(MemoryFormatKind::Contiguous), 4, 32).unwrap();
        let batch = l.epoch(0, 0).next().unwrap().unwrap();
        let e = feed.input(&batch).err().unwrap().to_string();
        assert!(e.contains("6 images of 32 pixels") && e.contains("(4 of 32)"), "{e}");
    }

    #[test]
    fn synthetic_batches_train_on_random_pixels_fixed_on_the_device_with_every_label_known() {
        let numerics = cpu(MemoryFormatKind::ChannelsLast);
        let mut feed = for_device(&numerics, 6, 32).unwrap();
        assert!(feed.synthetic_batch().is_none(), "real batches unless asked");
        feed.make_synthetic(4).unwrap();
        let batch = feed.synthetic_batch().unwrap();
        assert_eq!((batch.n, batch.images.len()), (6, 0), "labels only: no pixels to decode or copy");
        assert_eq!(batch.class, [0, 1, 2, 3, 0, 1]);
        let (a, la) = feed.input(&batch).unwrap();
        let (b, _) = feed.input(&feed.synthetic_batch().unwrap()).unwrap();
        let (a2, _) = feed.input(&batch).unwrap();
        assert_eq!(a.size(), [6, 3, 32, 32]);
        assert!(super::super::layout::is_channels_last(&a));
        assert!(a.min().double_value(&[]) >= -1.0 && a.max().double_value(&[]) < 1.0);
        assert!(a.std(true).double_value(&[]) > 0.5, "random, not constant");
        assert!(!a.equal(&b) && a.equal(&a2), "two fixed buffers, never rewritten");
        assert!(la.class.equal(&Tensor::from_slice(&batch.class)));
    }

    #[test]
    fn synthetic_is_refused_with_the_flags_that_need_real_records() {
        use super::super::TrainConfig;
        assert!(TrainConfig { synthetic: true, ..TrainConfig::default() }.validate().is_ok());
        for cfg in [
            TrainConfig { synthetic: true, valid_sets: vec!["v".into()], ..TrainConfig::default() },
            TrainConfig { synthetic: true, resume: Some("r".into()), ..TrainConfig::default() },
            TrainConfig { synthetic: true, eval_bin: vec!["lfw.bin".into()], ..TrainConfig::default() },
        ] {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains("--synthetic") && e.contains("need the real records"), "{e}");
        }
    }

    /// Overwrites every record of `dir/ds`'s shards (headers and payloads) with 0xff.
    fn damage_records(dir: &std::path::Path) {
        use std::io::{Seek, SeekFrom, Write};
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "shard") {
                let len = std::fs::metadata(&path).unwrap().len();
                let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.seek(SeekFrom::Start(64)).unwrap();
                f.write_all(&vec![0xff; len as usize - 64]).unwrap();
            }
        }
    }

    #[test]
    fn a_synthetic_run_trains_its_steps_without_reading_a_record() {
        use super::super::{Outcome, SingleProcess, TrainConfig, Trainer};
        let _turn = facekit_testkit::rng_turn();
        for synthetic in [true, false] {
            let t = tempfile::tempdir().unwrap();
            photos(t.path(), 12, 32);
            let cfg = TrainConfig {
                train_sets: vec!["ds".into()],
                data_dir: t.path().to_path_buf(),
                arch: crate::model::Arch::Tiny,
                image_size: 32,
                batch_size: 4,
                workers: 1,
                threads: 1,
                device: "cpu".into(),
                max_steps: Some(3),
                model_dir: t.path().join("Model"),
                run_name: Some("r".into()),
                synthetic,
                ..TrainConfig::default()
            };
            let tr =
                Trainer::new(cfg, vec![], Default::default(), Box::new(SingleProcess), Default::default()).unwrap();
            damage_records(t.path());
            match (synthetic, tr.run().unwrap()) {
                (true, Outcome::Finished(s)) => assert!(s.steps == 3 && s.final_loss.is_some_and(f64::is_finite)),
                // The control: the same run on the records meets the damage.
                (false, Outcome::CorruptData { .. }) => {}
                (_, other) => panic!("synthetic {synthetic}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_step_trains_on_the_losses_the_former_fresh_tensors_gave_for_every_task() {
        use super::super::{SingleProcess, TrainConfig, Trainer};
        let _turn = facekit_testkit::rng_turn();
        let t = tempfile::tempdir().unwrap();
        photos(t.path(), 12, 32);
        let cfg = TrainConfig {
            task: crate::model::Task::Multi,
            train_sets: vec!["ds".into()],
            data_dir: t.path().to_path_buf(),
            arch: crate::model::Arch::Tiny,
            image_size: 32,
            batch_size: 4,
            workers: 1,
            threads: 1,
            device: "cpu".into(),
            max_steps: Some(3),
            model_dir: t.path().join("Model"),
            run_name: Some("r".into()),
            ..TrainConfig::default()
        };
        let mut tr =
            Trainer::new(cfg, vec![], Default::default(), Box::new(SingleProcess), Default::default()).unwrap();
        tr.train_mode = false;
        for batch in tr.loader.epoch(0, 0).map(|b| b.unwrap()).collect::<Vec<_>>() {
            // Today's weights, the former path: fresh tensors from batch_to_device and labels_to_device.
            let want = tch::no_grad(|| {
                let out = tr.numerics.forward(&tr.net, &tr.numerics.input(&batch), false).unwrap();
                let l = tr.loss.try_losses(&out, &labels_to_device(&batch, Device::Cpu)).unwrap();
                (l.total.double_value(&[]), l.gender.map(|g| g.double_value(&[])), l.age.map(|a| a.double_value(&[])))
            });
            tr.step(std::slice::from_ref(&batch)).unwrap();
            assert!(tr.read_back().unwrap().is_none(), "a finite loss");
            let got = tr.last_losses.expect("the step's losses, read back");
            assert_eq!((got.total, got.gender, got.age), want);
            tr.feed.retire(vec![batch]).unwrap();
        }
    }

    #[cfg(not(feature = "nccl"))]
    #[test]
    fn the_sync_debug_mode_outside_cuda_builds_is_reported_unavailable() {
        // The default build has no CUDA headers: the mode cannot be set, and says why.
        let e = set_sync_debug_mode(SyncDebug::Error).unwrap_err().to_string();
        assert!(e.contains("needs a build with the `nccl` feature"), "{e}");
    }

    #[cfg(feature = "nccl")]
    #[test]
    fn the_sync_debug_mode_can_be_set_in_cuda_builds() {
        set_sync_debug_mode(SyncDebug::Warn).unwrap();
        set_sync_debug_mode(SyncDebug::Off).unwrap();
    }
}
