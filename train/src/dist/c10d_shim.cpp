// C entry points over libtorch's own distributed engine (c10d), for src/dist/ffi.rs: the TCPStore
// rendezvous, the Gloo (and, built with FACEKIT_NCCL, NCCL) process group, the collectives the
// trainer and Partial FC use, DDP's C++ Reducer, and two autograd functions (an all-gather whose
// backward is a reduce-scatter, and the sharded softmax cross-entropy of Partial FC).
//
// tch has no distributed bindings; everything here is PyTorch's code, reached through the headers
// of the wheel torch-sys links. As in amp_shim.cpp, every function catches C++ exceptions and
// returns -1 with the message kept for facekit_dist_last_error(): an exception unwinding into Rust
// frames is undefined behaviour. Tensors cross as tch's C_tensor, which is an at::Tensor*.

#include <ATen/ATen.h>
#include <c10/util/Logging.h>

#include "../ffi_guard.hpp"
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/logger.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#ifdef FACEKIT_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef USE_C10D_GLOO
#error "build with -DUSE_DISTRIBUTED -DUSE_C10D_GLOO (the defines of the wheel's CMake package), or ProcessGroupGloo.hpp is empty"
#endif

namespace {

using facekit::guarded;
using facekit::last_error;

// c10d reads 0 ms as "no timeout", and converting a double beyond int64 is undefined behaviour:
// a deadline must be a positive number of milliseconds that poll(2) can take.
std::chrono::milliseconds millis(double seconds) {
  double ms = seconds * 1000.0;
  if (!(ms >= 1.0 && ms <= static_cast<double>(std::numeric_limits<int32_t>::max()))) {
    throw std::invalid_argument("a timeout of " + std::to_string(seconds) + " s is not between 1 ms and 2^31 ms");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(ms));
}

}  // namespace

// A store connection: the TCPStore (server or client) under the prefix every key gets.
struct FkStore {
  c10::intrusive_ptr<c10d::TCPStore> tcp;
  c10::intrusive_ptr<c10d::Store> store;
};

// A process group with its one backend (Gloo for CPU tensors, NCCL for CUDA ones).
struct FkGroup {
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank;
  int size;
  bool nccl;
};

// DDP's gradient engine and the logger it reports to (the Reducer expects one).
struct FkReducer {
  std::shared_ptr<c10d::Reducer> reducer;
  std::shared_ptr<c10d::Logger> logger;
};

namespace {

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp::SUM;
    case 1:
      return c10d::ReduceOp::AVG;
    case 2:
      return c10d::ReduceOp::MAX;
    case 3:
      return c10d::ReduceOp::MIN;
    default:
      throw std::invalid_argument("reduce op code " + std::to_string(op) + " is not 0 (sum), 1 (avg), 2 (max) or 3 (min)");
  }
}

// Gloo has no AVG: a sum divided by the world size is what ProcessGroupGloo users do. This is
// the op sent for code `op`; finish_avg divides afterwards where it was an average.
c10d::ReduceOp wire_op(FkGroup* g, int op) {
  return op == 1 && !g->nccl ? c10d::ReduceOp(c10d::ReduceOp::SUM) : reduce_op(op);
}

void finish_avg(FkGroup* g, std::vector<at::Tensor>& ts, int op) {
  if (op == 1 && !g->nccl) {
    for (auto& t : ts) {
      t.div_(g->size);
    }
  }
}

// A group of one rank reduces nothing (and so works for CUDA tensors under Gloo too).
void allreduce(FkGroup* g, std::vector<at::Tensor>& ts, int op) {
  if (g->size == 1) {
    return;
  }
  c10d::AllreduceOptions opts;
  opts.reduceOp = wire_op(g, op);
  g->backend->allreduce(ts, opts)->wait();
  finish_avg(g, ts, op);
}

at::Tensor all_gather_rows(FkGroup* g, const at::Tensor& input) {
  if (g->size == 1) {
    return input.clone();
  }
  auto in = input.contiguous();
  auto shape = in.sizes().vec();
  shape[0] *= g->size;
  auto out = at::empty(shape, in.options());
  g->backend->_allgather_base(out, in)->wait();
  return out;
}

// All-gather along dim 0; backward reduce-scatters (sums) the gradient back to each rank's rows
// and multiplies it by `grad_scale` (Partial FC passes the world size, because DDP then averages
// the backbone's gradients over the ranks).
struct AllGatherFn : public torch::autograd::Function<AllGatherFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, int64_t group, double grad_scale) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["grad_scale"] = grad_scale;
    return all_gather_rows(reinterpret_cast<FkGroup*>(group), input);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto* g = reinterpret_cast<FkGroup*>(ctx->saved_data["group"].toInt());
    double scale = ctx->saved_data["grad_scale"].toDouble();
    auto grad = grads[0].contiguous();
    at::Tensor out;
    if (g->size == 1) {
      out = grad.clone();
    } else {
      auto shape = grad.sizes().vec();
      shape[0] /= g->size;
      out = at::empty(shape, grad.options());
      c10d::ReduceScatterOptions opts;
      opts.reduceOp = c10d::ReduceOp::SUM;
      g->backend->_reduce_scatter_base(out, grad, opts)->wait();
    }
    if (scale != 1.0) {
      out.mul_(scale);
    }
    return {out, at::Tensor(), at::Tensor()};
  }
};

// Softmax cross-entropy over classes sharded across the ranks (Partial FC): `logits` [N, C_local]
// are this rank's columns for all N rows of the global batch, `labels` [N] the column of each
// row's class in this shard or -1 when it lives on another rank. The loss (mean over N) is the same
// on every rank; its gradient, softmax minus one-hot over N, is exact for this rank's columns.
struct DistCrossEntropyFn : public torch::autograd::Function<DistCrossEntropyFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels, int64_t group) {
    auto* g = reinterpret_cast<FkGroup*>(group);
    auto x = logits.to(at::kFloat);
    auto n = x.size(0);
    std::vector<at::Tensor> row_max{std::get<0>(x.max(1, true))};
    allreduce(g, row_max, 2);
    auto e = (x - row_max[0]).exp();
    std::vector<at::Tensor> row_sum{e.sum(1, true)};
    allreduce(g, row_sum, 0);
    auto p = e.div(row_sum[0]);
    auto here = labels.ge(0).unsqueeze(1).to(at::kFloat);
    auto column = labels.clamp_min(0).unsqueeze(1);
    std::vector<at::Tensor> target{p.gather(1, column).mul(here)};
    allreduce(g, target, 0);
    auto loss = target[0].clamp_min(1e-30).log().neg().mean();
    auto grad = p.scatter_add(1, column, here.neg()).div_(static_cast<double>(n)).to(logits.scalar_type());
    ctx->save_for_backward({grad});
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto grad = ctx->get_saved_variables()[0];
    return {grad.mul(grads[0].to(grad.scalar_type())), at::Tensor(), at::Tensor()};
  }
};

std::vector<at::Tensor> tensor_list(at::Tensor* const* ts, size_t n) {
  std::vector<at::Tensor> list;
  list.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    list.push_back(*ts[i]);
  }
  return list;
}

}  // namespace

extern "C" {

const char* facekit_dist_last_error() { return last_error.c_str(); }

// c10 attaches the C++ stack to every error it raises, and c10d logs such errors whole in its
// warnings (a heartbeat whose store is gone, a connection retried): dozens of lines each that say
// nothing to a user. From this call on, an error carries only the line that raised it.
void facekit_hide_cpp_stacks() {
  c10::SetStackTraceFetcher(std::function<std::string()>([] { return std::string(); }));
}

// --- store -------------------------------------------------------------------------------------

// Connects to (or, with is_server, hosts) the TCPStore at host:port; port 0 with is_server picks a
// free port (read it with facekit_store_port). Keys are put under `prefix`.
int facekit_store_new(const char* host, int port, int is_server, int num_workers, double timeout_s, const char* prefix, FkStore** out) {
  return guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server != 0;
    if (num_workers > 0) {
      opts.numWorkers = static_cast<std::size_t>(num_workers);
    }
    opts.waitWorkers = false;
    opts.timeout = millis(timeout_s);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    c10::intrusive_ptr<c10d::Store> store = tcp;
    if (prefix != nullptr && prefix[0] != '\0') {
      store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store);
    }
    *out = new FkStore{tcp, store};
  });
}

// The timeout of later waits (get) on this connection; the connect itself used the one given to
// facekit_store_new.
int facekit_store_set_timeout(FkStore* s, double timeout_s) {
  return guarded([&] {
    s->tcp->setTimeout(millis(timeout_s));
    s->store->setTimeout(millis(timeout_s));
  });
}

int facekit_store_port(FkStore* s, int* port) {
  return guarded([&] { *port = s->tcp->getPort(); });
}

void facekit_store_free(FkStore* s) { delete s; }

int facekit_store_set(FkStore* s, const char* key, const uint8_t* value, size_t len) {
  return guarded([&] { s->store->set(std::string(key), std::vector<uint8_t>(value, value + len)); });
}

// Waits up to the store's timeout for `key`; the value is malloc'd (free with facekit_dist_free).
int facekit_store_get(FkStore* s, const char* key, uint8_t** value, size_t* len) {
  return guarded([&] {
    auto v = s->store->get(std::string(key));
    *len = v.size();
    *value = static_cast<uint8_t*>(std::malloc(v.size() == 0 ? 1 : v.size()));
    if (*value == nullptr) {
      throw std::bad_alloc();
    }
    std::memcpy(*value, v.data(), v.size());
  });
}

int facekit_store_check(FkStore* s, const char* key, int* found) {
  return guarded([&] { *found = s->store->check({std::string(key)}) ? 1 : 0; });
}

int facekit_store_add(FkStore* s, const char* key, int64_t delta, int64_t* value) {
  return guarded([&] { *value = s->store->add(std::string(key), delta); });
}

void facekit_dist_free(void* p) { std::free(p); }

// --- process group -----------------------------------------------------------------------------

// A process group of `size` ranks over `store` (keys under `prefix`). backend 0 = Gloo (CPU
// tensors; `gloo_host` names the address to bind, or NULL for Gloo's default: GLOO_SOCKET_IFNAME,
// else the hostname's address), 1 = NCCL (CUDA tensors; the current device must be set). Blocks
// until every rank has made its own.
int facekit_group_new(FkStore* s, const char* prefix, int rank, int size, int backend, double timeout_s, const char* gloo_host, FkGroup** out) {
  return guarded([&] {
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), s->store);
    auto pg = c10::make_intrusive<c10d::ProcessGroup>(store, rank, size);
    c10::intrusive_ptr<c10d::Backend> be;
    bool nccl = backend == 1;
    if (backend == 0) {
      auto opts = c10d::ProcessGroupGloo::Options::create_default(millis(timeout_s));
      if (gloo_host != nullptr) {
        opts->devices = {c10d::ProcessGroupGloo::createDeviceForHostname(std::string(gloo_host))};
      }
      be = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
      pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, be);
      pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    } else if (nccl) {
#ifdef FACEKIT_NCCL
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = millis(timeout_s);
      be = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
      pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, be);
      pg->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
#else
      throw std::runtime_error("this facekit was built without NCCL (cargo feature `nccl`)");
#endif
    } else {
      throw std::invalid_argument("backend code " + std::to_string(backend) + " is neither 0 (Gloo) nor 1 (NCCL)");
    }
    *out = new FkGroup{pg, be, rank, size, nccl};
  });
}

// Makes `index` the calling thread's current CUDA device. NCCL makes its communicators lazily, on
// the current device, and guesses the device of a barrier from it: a rank that left it at 0 would
// put its communicator and a CUDA context on GPU 0.
int facekit_cuda_set_device(int index) {
  return guarded([&] {
#ifdef FACEKIT_NCCL
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
#else
    (void)index;
    throw std::runtime_error("this facekit was built without NCCL (cargo feature `nccl`)");
#endif
  });
}

// Another handle on the same group (the trainer's replicas and Partial FC share one).
int facekit_group_clone(FkGroup* g, FkGroup** out) {
  return guarded([&] { *out = new FkGroup(*g); });
}

void facekit_group_free(FkGroup* g) {
  if (g == nullptr) {
    return;
  }
  try {
#ifdef FACEKIT_NCCL
    if (g->nccl) {
      c10::static_intrusive_pointer_cast<c10d::ProcessGroupNCCL>(g->backend)->shutdown();
    }
#endif
    delete g;
  } catch (...) {
    // A group torn down after a peer died may throw in its destructor; nothing is left to report to.
  }
}

// --- collectives (in place on tch tensors) ------------------------------------------------------

int facekit_allreduce(FkGroup* g, at::Tensor* const* ts, size_t n, int op) {
  return guarded([&] {
    // One call per tensor: Gloo's allreduce of a list means one tensor per device.
    for (size_t i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*ts[i]};
      allreduce(g, one, op);
    }
  });
}

int facekit_allreduce_coalesced(FkGroup* g, at::Tensor* const* ts, size_t n, int op) {
  return guarded([&] {
    auto list = tensor_list(ts, n);
    c10d::AllreduceCoalescedOptions opts;
    opts.reduceOp = wire_op(g, op);
    g->backend->allreduce_coalesced(list, opts)->wait();
    finish_avg(g, list, op);
  });
}

// Broadcasts `ts` from `root`, packed into buffers of up to 250 MiB as DDP does for its initial
// weights and buffers.
int facekit_broadcast_coalesced(FkGroup* g, at::Tensor* const* ts, size_t n, int root) {
  return guarded([&] {
    auto list = tensor_list(ts, n);
    c10d::broadcast_coalesced(g->pg, list, 250u << 20, root);
  });
}

int facekit_allgather_base(FkGroup* g, at::Tensor* out, const at::Tensor* in) {
  return guarded([&] { g->backend->_allgather_base(*out, const_cast<at::Tensor&>(*in))->wait(); });
}

int facekit_reduce_scatter_base(FkGroup* g, at::Tensor* out, const at::Tensor* in, int op) {
  return guarded([&] {
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = reduce_op(op);
    g->backend->_reduce_scatter_base(*out, const_cast<at::Tensor&>(*in), opts)->wait();
  });
}

int facekit_barrier(FkGroup* g) {
  return guarded([&] { g->backend->barrier()->wait(); });
}

// --- autograd functions -------------------------------------------------------------------------

int facekit_all_gather_autograd(FkGroup* g, const at::Tensor* in, double grad_scale, at::Tensor** out) {
  return guarded([&] { *out = new at::Tensor(AllGatherFn::apply(*in, reinterpret_cast<int64_t>(g), grad_scale)); });
}

int facekit_dist_cross_entropy(FkGroup* g, const at::Tensor* logits, const at::Tensor* labels, at::Tensor** out) {
  return guarded([&] { *out = new at::Tensor(DistCrossEntropyFn::apply(*logits, *labels, reinterpret_cast<int64_t>(g))); });
}

// --- DDP ----------------------------------------------------------------------------------------

// DDP's Reducer over `params` (the same list, in the same order, on every rank), with
// torch.nn.parallel.DistributedDataParallel's bucketing (see below). Checks
// that every rank has the same parameters first.
int facekit_reducer_new(FkGroup* g, at::Tensor* const* params, size_t n, int64_t bucket_bytes, int find_unused, FkReducer** out) {
  return guarded([&] {
    auto list = tensor_list(params, n);
    c10d::verify_params_across_processes(g->pg, list, std::nullopt);
    const int64_t first = 1 << 20;
    std::vector<bool> sparse(list.size(), false);
    // distributed.py's first-iteration buckets: one for everything unless unused parameters are
    // searched for (the real backward order is unknown until then); after the first step the
    // Reducer rebuilds them in that order, 1 MiB first then `bucket_bytes` (the empty list below
    // selects exactly that rebuild, as DDP passes it).
    std::vector<size_t> limits_in = find_unused != 0 ? std::vector<size_t>{static_cast<size_t>(first), static_cast<size_t>(bucket_bytes)}
                                                     : std::vector<size_t>{std::numeric_limits<size_t>::max()};
    auto buckets = std::get<0>(c10d::compute_bucket_assignment_by_size(list, limits_in, sparse));
    // Reversed, as distributed.py does: gradients arrive roughly in reverse definition order.
    std::reverse(buckets.begin(), buckets.end());
    std::vector<int64_t> caps;
    std::unordered_map<size_t, std::string> names;
    auto reducer = std::make_shared<c10d::Reducer>(list, buckets, g->pg, sparse, bucket_bytes, find_unused != 0,
                                                   /*gradient_as_bucket_view=*/false, names, first,
                                                   /*skip_all_reduce_unused_params=*/false,
                                                   /*use_python_reducer=*/false, caps);
    auto logger = std::make_shared<c10d::Logger>(reducer);
    reducer->set_logger(logger);
    *out = new FkReducer{reducer, logger};
  });
}

void facekit_reducer_free(FkReducer* r) {
  try {
    delete r;
  } catch (...) {
    // ~Reducer is noexcept(false); after a failed collective there is nothing left to report to.
  }
}

// What DistributedDataParallel.forward does before the module runs, when gradients will be synced.
int facekit_reducer_prepare_forward(FkReducer* r) {
  return guarded([&] {
    r->reducer->prepare_for_forward();
    r->reducer->rebuild_buckets();
  });
}

// After forward: the next backward all-reduces gradients bucket by bucket. `outputs` are searched
// for unused parameters when the reducer was made with find_unused.
int facekit_reducer_prepare_backward(FkReducer* r, at::Tensor* const* outputs, size_t n) {
  return guarded([&] { r->reducer->prepare_for_backward(tensor_list(outputs, n)); });
}

}  // extern "C"
