// C entry points around CUDA streams, events and the synchronisation debug mode, for
// src/trainer/feed.rs (the device feed: copies on a side stream, the training stream waiting on
// an event of the copy, slots returned when their copy's event completed).
//
// Streams and events go through c10's device-generic interface (c10::Stream, c10::Event,
// c10::StreamGuard and the CUDA DeviceGuardImpl that libtorch_cuda registers at load time), so
// this file needs no CUDA header and compiles in the default build; on a libtorch without CUDA
// every call fails with c10's "no device guard for CUDA" message. The sync debug mode lives in
// c10_cuda's own header: it is compiled only under FACEKIT_NCCL (the `nccl` feature, which brings
// CUDA's headers) and reported unavailable otherwise.
//
// A stream crosses into Rust as c10's three numbers (Stream::pack3: id, device index, device
// type); an event as an owned c10::Event*. Every function catches C++ exceptions (ffi_guard.hpp).

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#ifdef FACEKIT_NCCL
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "../ffi_guard.hpp"

#include <cstdint>
#include <stdexcept>

namespace {

using facekit::guarded;
using facekit::last_error;

c10::Device cuda(int index) { return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index)); }

const c10::impl::DeviceGuardImplInterface* cuda_impl() { return c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA); }

void pack(const c10::Stream& s, int64_t* out) {
  auto d = s.pack3();
  out[0] = d.stream_id;
  out[1] = d.device_index;
  out[2] = static_cast<int64_t>(d.device_type);
}

c10::Stream unpack(const int64_t* s) {
  return c10::Stream::unpack3(s[0], static_cast<c10::DeviceIndex>(s[1]), static_cast<c10::DeviceType>(s[2]));
}

}  // namespace

extern "C" {

const char* facekit_cuda_last_error() { return last_error.c_str(); }

// A stream of CUDA device `device` from c10's pool (not the default stream): the feed's copies.
int facekit_cuda_stream_from_pool(int device, int64_t* out) {
  return guarded([&] { pack(cuda_impl()->getStreamFromGlobalPool(cuda(device), false), out); });
}

// The calling thread's current stream on `device`: the one the training step's kernels go to.
int facekit_cuda_stream_current(int device, int64_t* out) {
  return guarded([&] { pack(cuda_impl()->getStream(cuda(device)), out); });
}

// dst.copy_(src, non_blocking=true) queued on `stream`: from pinned host memory the host does
// not wait for it.
int facekit_cuda_copy_on(const int64_t* stream, at::Tensor* dst, const at::Tensor* src) {
  return guarded([&] {
    c10::StreamGuard guard(unpack(stream));
    dst->copy_(*src, true);
  });
}

int facekit_cuda_event_new(c10::Event** out) {
  return guarded([&] { *out = new c10::Event(c10::DeviceType::CUDA); });
}

void facekit_cuda_event_free(c10::Event* event) { delete event; }

// Marks everything queued on `stream` so far (re-recording moves the mark).
int facekit_cuda_event_record(c10::Event* event, const int64_t* stream) {
  return guarded([&] { event->record(unpack(stream)); });
}

// Work queued on `stream` from now on runs after the event's work; the host does not wait.
int facekit_cuda_event_block(const c10::Event* event, const int64_t* stream) {
  return guarded([&] { event->block(unpack(stream)); });
}

// Whether the event's work has completed (true for an event never recorded); never waits.
int facekit_cuda_event_query(const c10::Event* event, int* done) {
  return guarded([&] { *done = event->query() ? 1 : 0; });
}

// CUDA's synchronisation debug mode (torch.cuda.set_sync_debug_mode): 0 off, 1 warn, 2 error on
// any call that makes the host wait for the device.
int facekit_cuda_set_sync_debug_mode(int mode) {
  return guarded([&] {
#ifdef FACEKIT_NCCL
    if (mode < 0 || mode > 2) {
      throw std::invalid_argument("sync debug mode " + std::to_string(mode) + " is not 0 (off), 1 (warn) or 2 (error)");
    }
    c10::cuda::warning_state().set_sync_debug_mode(static_cast<c10::cuda::SyncDebugMode>(mode));
#else
    (void)mode;
    throw std::runtime_error("CUDA's sync debug mode needs a build with the `nccl` feature (CUDA's headers)");
#endif
  });
}

}  // extern "C"
