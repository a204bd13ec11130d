// C entry points around libtorch's multi-tensor optimiser kernels, for src/trainer/optim.rs and
// clip.rs: one call updates every parameter (tch binds only the single-tensor ops, and a loop
// over them issues several kernels per parameter).
//
// Each update takes `found_inf`, a 1-element f32 tensor on the parameters' device: when it holds
// 1 the kernels apply nothing (parameters, momentum and moments unchanged), decided on the device
// so no step waits for the host. Errors follow ffi_guard.hpp (return -1, facekit_optim_last_error).

#include <ATen/ATen.h>

#include "../ffi_guard.hpp"

#include <cstddef>
#include <vector>

namespace {

using facekit::guarded;
using facekit::last_error;

std::vector<at::Tensor> list(at::Tensor* const* ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    v.push_back(*ts[i]);
  }
  return v;
}

}  // namespace

extern "C" {

const char* facekit_optim_last_error() { return last_error.c_str(); }

// torch.optim.SGD(fused=True) without dampening: buf = momentum·buf + (g + wd·p); p -= lr·buf.
// Buffers start at zero, so the first step's momentum·0 + g is PyTorch's buf = g exactly and no
// host flag says which step is the first.
int facekit_fused_sgd_(at::Tensor* const* params, at::Tensor* const* grads, at::Tensor* const* bufs, size_t n,
                       double weight_decay, double momentum, double lr, int nesterov, const at::Tensor* found_inf) {
  return guarded([&] {
    auto b = momentum != 0.0 ? list(bufs, n) : std::vector<at::Tensor>{};
    at::_fused_sgd_(list(params, n), list(grads, n), b, weight_decay, momentum, lr, 0.0, nesterov != 0, false, false,
                    std::nullopt, *found_inf);
  });
}

// torch.optim.AdamW(fused=True): steps are f32 scalars on the device, counted up before the kernel
// and back down where found_inf skipped it, as torch.optim's _fused_adamw does.
int facekit_fused_adamw_(at::Tensor* const* params, at::Tensor* const* grads, at::Tensor* const* exp_avgs,
                         at::Tensor* const* exp_avg_sqs, at::Tensor* const* steps, size_t n, double lr, double beta1,
                         double beta2, double weight_decay, double eps, const at::Tensor* found_inf) {
  return guarded([&] {
    auto s = list(steps, n);
    at::_foreach_add_(s, 1);
    at::_fused_adamw_(list(params, n), list(grads, n), list(exp_avgs, n), list(exp_avg_sqs, n), {}, s, lr, beta1,
                      beta2, weight_decay, eps, false, false, std::nullopt, *found_inf);
    at::_foreach_sub_(s, std::vector<at::Tensor>(n, found_inf->reshape({})));
  });
}

// torch.nn.utils.clip_grad_norm_(foreach=True): total = ‖(‖g_i‖)‖; g_i *= min(1, max/(total+1e-6)),
// applied unconditionally so that nothing is decided on the host. *total receives a new tensor.
int facekit_clip_grad_norm_(at::Tensor* const* grads, size_t n, double max_norm, at::Tensor** total) {
  return guarded([&] {
    auto g = list(grads, n);
    auto norms = at::_foreach_norm(g, 2);
    auto t = at::linalg_vector_norm(at::stack(norms), 2);
    auto coef = at::clamp_max(at::reciprocal(t + 1e-6) * max_norm, 1.0);
    at::_foreach_mul_(g, coef);
    *total = new at::Tensor(t);
  });
}

}  // extern "C"
