// C entry points around libtorch's autocast state and AMP unscaling, for src/train/amp.rs.
//
// tch only exposes CUDA autocast with its default dtype (fp16); mixed precision in bf16, and any
// autocast on the CPU, needs the device-type-aware API of ATen/autocast_mode.h. Every function
// catches C++ exceptions and returns -1 with the message kept for facekit_amp_last_error(): an
// exception unwinding into Rust frames is undefined behaviour.
//
// Codes shared with Rust: device 0 = CPU, 1 = CUDA (c10::DeviceType values), dtype = the
// c10::ScalarType value (tch's Kind::c_int). The static_asserts pin those numbers.

#include <ATen/autocast_mode.h>
#include <ATen/ATen.h>

#include "../ffi_guard.hpp"

#include <cstddef>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

static_assert(static_cast<int>(c10::DeviceType::CPU) == 0, "DeviceType::CPU moved");
static_assert(static_cast<int>(c10::DeviceType::CUDA) == 1, "DeviceType::CUDA moved");
static_assert(static_cast<int>(at::kHalf) == 5, "ScalarType::Half moved");
static_assert(static_cast<int>(at::kFloat) == 6, "ScalarType::Float moved");
static_assert(static_cast<int>(at::kBFloat16) == 15, "ScalarType::BFloat16 moved");

namespace {

using facekit::guarded;
using facekit::last_error;

c10::DeviceType device_type(int device) {
  switch (device) {
    case 0:
      return c10::DeviceType::CPU;
    case 1:
      return c10::DeviceType::CUDA;
    default:
      throw std::invalid_argument("autocast device code " + std::to_string(device) + " is neither 0 (CPU) nor 1 (CUDA)");
  }
}

}  // namespace

extern "C" {

const char* facekit_amp_last_error() { return last_error.c_str(); }

int facekit_autocast_is_enabled(int device, int* enabled) {
  return guarded([&] { *enabled = at::autocast::is_autocast_enabled(device_type(device)) ? 1 : 0; });
}

int facekit_autocast_set_enabled(int device, int enabled) {
  return guarded([&] { at::autocast::set_autocast_enabled(device_type(device), enabled != 0); });
}

int facekit_autocast_get_dtype(int device, int* dtype) {
  return guarded([&] { *dtype = static_cast<int>(at::autocast::get_autocast_dtype(device_type(device))); });
}

int facekit_autocast_set_dtype(int device, int dtype) {
  return guarded([&] {
    auto t = static_cast<at::ScalarType>(dtype);
    if (t != at::kHalf && t != at::kBFloat16 && t != at::kFloat) {
      throw std::invalid_argument("autocast dtype code " + std::to_string(dtype) + " is not Half, BFloat16 or Float");
    }
    at::autocast::set_autocast_dtype(device_type(device), t);
  });
}

int facekit_autocast_increment_nesting(int* level) {
  return guarded([&] { *level = at::autocast::increment_nesting(); });
}

int facekit_autocast_decrement_nesting(int* level) {
  return guarded([&] { *level = at::autocast::decrement_nesting(); });
}

int facekit_autocast_clear_cache() {
  return guarded([&] { at::autocast::clear_cache(); });
}

// One fused call over every gradient (tch wraps only the single-tensor form): multiplies each by
// inv_scale in place and sets found_inf to 1 if any element is inf or NaN.
int facekit_amp_unscale_(at::Tensor* const* grads, size_t n, at::Tensor* found_inf, const at::Tensor* inv_scale) {
  return guarded([&] {
    std::vector<at::Tensor> list;
    list.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      list.push_back(*grads[i]);
    }
    at::_amp_foreach_non_finite_check_and_unscale_(list, *found_inf, *inv_scale);
  });
}

}  // extern "C"
