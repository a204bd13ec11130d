//! The ring of batch slots: memory for whole batches, allocated once by an allocator the caller
//! supplies and reused batch after batch, epoch after epoch (FFCV's `allocate_memory(batch_size,
//! batches_ahead + 2)`). Decode threads write images straight into a slot; the consumer gets the
//! slot inside its [`crate::Batch`] and gives it back by dropping the batch.
//!
//! The caller chooses the memory: [`HostAlloc`] (plain aligned host memory) here, pinned memory
//! from the trainer, from which the GPU copies asynchronously. A consumer that keeps more batches
//! than the ring holds (collecting an epoch into a `Vec`) is not blocked: the ring grows by one
//! slot each time it runs dry, which [`SlotStats`] counts, so a steady consumer is seen to
//! allocate nothing after its first batches.

use super::error::{Error, Result};
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Alignment of every slot's start: a cache line, and what SIMD stores and DMA engines like.
pub const SLOT_ALIGN: usize = 64;

/// Memory for batch slots, supplied by the loader's caller.
pub trait SlotAlloc: Send + Sync {
    /// A region of exactly `len` bytes whose start is aligned to [`SLOT_ALIGN`]; it lives until
    /// dropped, which the ring does only when the loader and every batch holding it are gone.
    fn alloc(&self, len: usize) -> std::result::Result<Box<dyn SlotMemory>, String>;
}

/// One region of slot memory.
pub trait SlotMemory: Send + Sync + Any {
    /// The region's bytes.
    fn bytes(&self) -> &[u8];
    /// The region's bytes, to write into.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// The region as [`Any`], so that an allocator can find its own type again (for example the
    /// pinned tensor behind a slot).
    fn as_any(&self) -> &dyn Any;
}

/// Plain host memory from the global allocator, aligned to [`SLOT_ALIGN`].
#[derive(Debug, Default, Clone, Copy)]
pub struct HostAlloc;

impl SlotAlloc for HostAlloc {
    fn alloc(&self, len: usize) -> std::result::Result<Box<dyn SlotMemory>, String> {
        HostMemory::new(len).map(|m| Box::new(m) as Box<dyn SlotMemory>)
    }
}

/// A zeroed, [`SLOT_ALIGN`]-aligned heap region.
pub struct HostMemory {
    blocks: Vec<Block>,
    len: usize,
}

/// The unit [`HostMemory`] is made of: its alignment is the region's.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([u8; SLOT_ALIGN]);

impl HostMemory {
    /// `len` zeroed bytes.
    pub fn new(len: usize) -> std::result::Result<Self, String> {
        let mut blocks = Vec::new();
        blocks.try_reserve_exact(len.div_ceil(SLOT_ALIGN)).map_err(|e| e.to_string())?;
        blocks.resize(len.div_ceil(SLOT_ALIGN), Block([0; SLOT_ALIGN]));
        Ok(HostMemory { blocks, len })
    }
}

impl SlotMemory for HostMemory {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `Block` is `repr(C)` plain bytes without padding (size == alignment == 64), so
        // the vector's blocks are `blocks.len() * 64 >= len` initialised, contiguous bytes.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the borrow of `self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<u8>(), self.len) }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// How many slots a ring holds and has allocated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotStats {
    /// Slots allocated since the ring was made (the ones made up front included).
    pub allocated: u64,
    /// Slots allocated up front.
    pub initial: u64,
    /// Bytes per slot.
    pub slot_bytes: usize,
}

/// A fixed set of equal slots and the allocator that made them.
pub(crate) struct Ring {
    alloc: Arc<dyn SlotAlloc>,
    slot_bytes: usize,
    free: Mutex<Vec<Box<dyn SlotMemory>>>,
    allocated: AtomicU64,
    initial: u64,
}

impl Ring {
    /// A ring of `count` slots of `slot_bytes` each, all allocated now.
    pub(crate) fn new(alloc: Arc<dyn SlotAlloc>, slot_bytes: usize, count: usize) -> Result<Arc<Ring>> {
        let ring = Ring {
            alloc,
            slot_bytes,
            free: Mutex::new(Vec::with_capacity(count)),
            allocated: AtomicU64::new(0),
            initial: count as u64,
        };
        let slots = (0..count).map(|_| ring.allocate()).collect::<Result<Vec<_>>>()?;
        *ring.free.lock().expect("ring lock") = slots;
        Ok(Arc::new(ring))
    }

    /// A free slot, or a new one when every slot is taken.
    pub(crate) fn take(self: &Arc<Self>) -> Result<Slot> {
        let free = self.free.lock().expect("ring lock").pop();
        let memory = match free {
            Some(m) => m,
            None => self.allocate()?,
        };
        Ok(Slot { memory: Some(memory), ring: Some(self.clone()), used: 0 })
    }

    pub(crate) fn stats(&self) -> SlotStats {
        SlotStats {
            allocated: self.allocated.load(Ordering::Relaxed),
            initial: self.initial,
            slot_bytes: self.slot_bytes,
        }
    }

    fn allocate(&self) -> Result<Box<dyn SlotMemory>> {
        let bytes = self.slot_bytes;
        let memory = self.alloc.alloc(bytes).map_err(|reason| Error::Alloc { bytes, reason })?;
        let start = memory.bytes().as_ptr() as usize;
        if memory.bytes().len() != bytes || !start.is_multiple_of(SLOT_ALIGN) {
            let reason = format!(
                "the allocator gave {} bytes at address {start:#x}, not {bytes} aligned to {SLOT_ALIGN}",
                memory.bytes().len()
            );
            return Err(Error::Alloc { bytes, reason });
        }
        self.allocated.fetch_add(1, Ordering::Relaxed);
        Ok(memory)
    }

    fn give_back(&self, memory: Box<dyn SlotMemory>) {
        if let Ok(mut free) = self.free.lock() {
            free.push(memory);
        }
    }
}

/// One batch's memory: a slot of a ring (returned to it on drop) or, for a batch made outside
/// the loader or cloned, memory of its own. Reads as the `used` bytes that hold images.
pub struct Slot {
    memory: Option<Box<dyn SlotMemory>>,
    ring: Option<Arc<Ring>>,
    used: usize,
}

impl Slot {
    /// The bytes that hold images.
    pub fn bytes(&self) -> &[u8] {
        &self.memory.as_ref().expect("present until drop").bytes()[..self.used]
    }

    /// The memory behind the slot (the allocator's own type through [`SlotMemory::as_any`]).
    pub fn memory(&self) -> &dyn SlotMemory {
        self.memory.as_deref().expect("present until drop")
    }

    /// Whether the slot belongs to a loader's ring (rather than to a batch made by hand or cloned).
    pub fn is_from_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// The first `used` bytes, to write into; the slot reads as that many bytes from now on.
    pub(crate) fn writable(&mut self, used: usize) -> &mut [u8] {
        let bytes = self.memory.as_mut().expect("present until drop").bytes_mut();
        assert!(used <= bytes.len(), "a batch of {used} bytes does not fit a slot of {}", bytes.len());
        self.used = used;
        &mut bytes[..used]
    }
}

impl From<Vec<u8>> for Slot {
    fn from(v: Vec<u8>) -> Self {
        let used = v.len();
        Slot { memory: Some(Box::new(OwnedMemory(v))), ring: None, used }
    }
}

impl std::ops::Deref for Slot {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

impl Clone for Slot {
    /// A copy of the bytes in memory of its own: a clone never holds a ring's slot.
    fn clone(&self) -> Self {
        Slot::from(self.bytes().to_vec())
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Slot {}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({} bytes{})", self.used, if self.is_from_ring() { ", from the ring" } else { "" })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let (Some(ring), Some(memory)) = (self.ring.take(), self.memory.take()) {
            ring.give_back(memory);
        }
    }
}

/// Memory of a slot made from a `Vec` (tests, clones): unaligned, owned by the slot.
struct OwnedMemory(Vec<u8>);

impl SlotMemory for OwnedMemory {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts what it allocates and can be told to fail or to misalign.
    #[derive(Default)]
    struct Counting {
        calls: AtomicU64,
        misalign: bool,
    }

    impl SlotAlloc for Counting {
        fn alloc(&self, len: usize) -> std::result::Result<Box<dyn SlotMemory>, String> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.misalign {
                return Ok(Box::new(OwnedMemory(vec![0; len + 1])));
            }
            HostAlloc.alloc(len)
        }
    }

    #[test]
    fn slots_are_aligned_and_come_back_to_the_ring_when_dropped() {
        let alloc = Arc::new(Counting::default());
        let ring = Ring::new(alloc.clone(), 1000, 2).unwrap();
        for _ in 0..10 {
            let (mut a, b) = (ring.take().unwrap(), ring.take().unwrap());
            assert_eq!(a.writable(1000).as_ptr() as usize % SLOT_ALIGN, 0);
            a.writable(300).fill(7);
            assert_eq!(a.len(), 300);
            assert!(a.iter().all(|&x| x == 7) && b.is_from_ring());
        }
        assert_eq!(alloc.calls.load(Ordering::Relaxed), 2, "a consumer that gives slots back allocates nothing more");
        let held: Vec<Slot> = (0..5).map(|_| ring.take().unwrap()).collect();
        assert_eq!(ring.stats(), SlotStats { allocated: 5, initial: 2, slot_bytes: 1000 });
        drop(held);
        assert_eq!(ring.free.lock().unwrap().len(), 5);
    }

    #[test]
    fn a_clone_is_a_copy_outside_the_ring() {
        let ring = Ring::new(Arc::new(HostAlloc), 16, 1).unwrap();
        let mut slot = ring.take().unwrap();
        slot.writable(4).copy_from_slice(&[1, 2, 3, 4]);
        let copy = slot.clone();
        assert!(!copy.is_from_ring() && copy == slot && copy[..] == [1, 2, 3, 4]);
        assert_eq!(format!("{slot:?}"), "Slot(4 bytes, from the ring)");
    }

    #[test]
    fn an_allocator_that_breaks_its_promise_is_an_error_not_a_slot() {
        let e = Ring::new(Arc::new(Counting { misalign: true, ..Counting::default() }), 64, 1).err().expect("refused");
        assert!(matches!(&e, Error::Alloc { bytes: 64, reason } if reason.contains("65 bytes")), "{e}");
    }
}
