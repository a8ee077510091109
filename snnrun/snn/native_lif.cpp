// The STBP LIF recurrence as one C++ loop per block of neurons (CPU), forward and
// backward; and the k×k average pool that follows a spiking conv layer (end of file). Built on first use by torch.utils.cpp_extension (snnrun/snn/native.py);
// the math is that of snnrun/snn/fused.py, element by element:
//   forward   u[0] = x[0];  u[t] = f(o[t-1]) * u[t-1] + x[t];  o[t] = g(u[t])
//   backward  du[t] = go[t]*h(u[t]) + du[t+1]*(f(o[t]) + u[t]*f'(o[t])*h(u[t]))
// f(1), f(0), f'(1), f'(0) come in as tensors computed by lif.leak_reset (same
// rounding as the reference): one value each when every neuron has the same (the
// usual case: four scalars in registers) or one per neuron. The product and the sum
// are rounded separately (-ffp-contract=off), as torch's separate kernels do.
//
// Speed (measured: 10-20x between the two ways of writing the same loop): every
// loop over a row of neurons is its own out-of-line function whose arrays are
// __restrict__ parameters, with no branch in its body for a given surrogate and
// gradient mode (template parameters), g(u) as one comparison and the leak
// constants as values, so the compiler vectorises it. Inlined into the time loop,
// or with a conditional load, GCC kept it scalar. Neurons are walked in blocks of
// kBlock with time inside a block, so the row of the previous step (or du[t+1]) is
// still in the L1 cache when it is read again.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <limits>

#define NOINLINE __attribute__((noinline))

namespace {

constexpr int64_t kBlock = 1024;  // neurons per block: 4 KiB a row in float32
constexpr int64_t kGrain = 4096;  // the smallest range one thread takes

enum Surrogate { H1 = 1, H2 = 2, H3 = 3, H4 = 4 };
enum Mode { SPATIAL = 0, LEAK = 1, FULL = 2 };  // td_grad=false; detach_reset; both

template <typename T>
struct Window {  // the surrogate's constants, computed once per call in double and
                 // rounded once, as torch rounds a Python float scalar
  T a, half, inv, root_half, quarter_a, edge, two_a, norm;
  explicit Window(double width)
      : a(T(width)),
        half(T(0.5 * width)),
        inv(T(1) / T(width)),
        root_half(T(0.5 * std::sqrt(width))),
        quarter_a(T(0.25 * width)),
        edge(T(2.0 / std::sqrt(width))),
        two_a(T(-2.0 * width)),
        norm(T(std::sqrt(2.0 * M_PI * width))) {}
};

template <typename T, int KIND>
inline T slope(T delta, const Window<T>& w) {
  if constexpr (KIND == H1) {
    return std::abs(delta) < w.half ? w.inv : T(0);
  } else if constexpr (KIND == H2) {
    const T mag = std::abs(delta);
    return mag < w.edge ? w.root_half - w.quarter_a * mag : T(0);
  } else if constexpr (KIND == H3) {
    const T s = T(1) / (T(1) + std::exp(-delta / w.a));
    return s * (T(1) - s) / w.a;
  } else {
    return std::exp(delta * delta / w.two_a) / w.norm;
  }
}

// g(u) as one comparison: u > V_th is u >= the next float above V_th (exact for every
// non-NaN u), so "gt" comes in as that cut.
template <typename T>
T firing_cut(double threshold, bool strict) {
  const T th = static_cast<T>(threshold);
  return strict ? std::nextafter(th, std::numeric_limits<T>::infinity()) : th;
}

// f(1), f(0), f'(1), f'(0): the same for every neuron (values) ...
template <typename T>
struct Uniform {
  T f1, f0, d1, d0;
  Uniform at(int64_t) const { return *this; }
  T leak(bool fired, int64_t) const { return fired ? f1 : f0; }
  T reset(bool fired, int64_t) const { return fired ? d1 : d0; }
};

// ... or one per neuron (arrays, from the first neuron of the block on)
template <typename T>
struct PerNeuron {
  const T *f1, *f0, *d1, *d0;
  PerNeuron at(int64_t b) const { return {f1 + b, f0 + b, d1 + b, d0 + b}; }
  T leak(bool fired, int64_t i) const {
    const T one = f1[i], zero = f0[i];
    return fired ? one : zero;
  }
  T reset(bool fired, int64_t i) const {
    const T one = d1[i], zero = d0[i];
    return fired ? one : zero;
  }
};

// the first step: u = x, o = g(u); count neurons
template <typename T>
NOINLINE void first_row(const T* __restrict__ x, T* __restrict__ u, T* __restrict__ o,
                        int64_t count, T cut) {
  for (int64_t i = 0; i < count; ++i) {
    const T v = x[i];
    u[i] = v;
    o[i] = v >= cut ? T(1) : T(0);
  }
}

// one step: u = f(g(prev))·prev + x, o = g(u)
template <typename T, typename Leak>
NOINLINE void forward_row(const T* __restrict__ prev, const T* __restrict__ x,
                          T* __restrict__ u, T* __restrict__ o, const Leak leak,
                          int64_t count, T cut) {
  for (int64_t i = 0; i < count; ++i) {
    const T p = prev[i];
    const T product = leak.leak(p >= cut, i) * p;
    const T v = product + x[i];
    u[i] = v;
    o[i] = v >= cut ? T(1) : T(0);
  }
}

// x, u, o: [T, n]; one thread's neurons [begin, end), block by block
template <typename T, typename Leak>
void forward_range(const T* x, T* u, T* o, const Leak leak, int64_t steps, int64_t n,
                   int64_t begin, int64_t end, T cut) {
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t count = std::min(end, b + kBlock) - b;
    first_row<T>(x + b, u + b, o + b, count, cut);
    for (int64_t t = 1; t < steps; ++t) {
      const int64_t at = t * n + b;
      forward_row<T, Leak>(u + at - n, x + at, u + at, o + at, leak.at(b), count, cut);
    }
  }
}

// the last step: du = go·h(u), no temporal term
template <typename T, int KIND>
NOINLINE void last_row(const T* __restrict__ u, const T* __restrict__ go,
                       T* __restrict__ du, int64_t count, T th, const Window<T> w) {
  for (int64_t i = 0; i < count; ++i) du[i] = go[i] * slope<T, KIND>(u[i] - th, w);
}

// one step back: du = go·h(u) + dnext·(f(o) + u·f'(o)·h(u)), o = g(u)
template <typename T, int KIND, int MODE, typename Leak>
NOINLINE void backward_row(const T* __restrict__ u, const T* __restrict__ go,
                           const T* __restrict__ dnext, T* __restrict__ du,
                           const Leak leak, int64_t count, T th, T cut,
                           const Window<T> w) {
  for (int64_t i = 0; i < count; ++i) {
    const T v = u[i];
    const T h = slope<T, KIND>(v - th, w);
    T grad = go[i] * h;
    if constexpr (MODE != SPATIAL) {
      const bool fired = v >= cut;
      T carry = leak.leak(fired, i);
      if constexpr (MODE == FULL) {
        const T reset = v * leak.reset(fired, i);
        carry += reset * h;
      }
      grad += dnext[i] * carry;
    }
    du[i] = grad;
  }
}

// u, go, out: [T, n]; one thread's neurons [begin, end), block by block
template <typename T, int KIND, int MODE, typename Leak>
void backward_range(const T* u, const T* go, T* out, const Leak leak, int64_t steps,
                    int64_t n, int64_t begin, int64_t end, T th, T cut,
                    const Window<T> w) {
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t count = std::min(end, b + kBlock) - b;
    const int64_t last = (steps - 1) * n + b;
    last_row<T, KIND>(u + last, go + last, out + last, count, th, w);
    for (int64_t t = steps - 2; t >= 0; --t) {
      const int64_t at = t * n + b;
      backward_row<T, KIND, MODE, Leak>(u + at, go + at, out + at + n, out + at,
                                        leak.at(b), count, th, cut, w);
    }
  }
}

// The same without keeping u (evaluation: nothing will run backward): each block's
// potentials live in two rows of scratch, the step before and this one.
template <typename T, typename Leak>
void spikes_range(const T* x, T* o, const Leak leak, int64_t steps, int64_t n,
                  int64_t begin, int64_t end, T cut) {
  std::vector<T> scratch(2 * kBlock);
  T* rows[2] = {scratch.data(), scratch.data() + kBlock};
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t count = std::min(end, b + kBlock) - b;
    first_row<T>(x + b, rows[0], o + b, count, cut);
    for (int64_t t = 1; t < steps; ++t) {
      const int64_t at = t * n + b;
      forward_row<T, Leak>(rows[(t - 1) & 1], x + at, rows[t & 1], o + at, leak.at(b),
                           count, cut);
    }
  }
}

template <typename T, typename Leak>
void run_forward(const T* x, T* u, T* o, const Leak leak, int64_t steps, int64_t n,
                 T cut) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    if (u == nullptr) {
      spikes_range<T, Leak>(x, o, leak, steps, n, begin, end, cut);
    } else {
      forward_range<T, Leak>(x, u, o, leak, steps, n, begin, end, cut);
    }
  });
}

template <typename T, int KIND, int MODE, typename Leak>
void run_backward(const T* u, const T* go, T* out, const Leak leak, int64_t steps,
                  int64_t n, T th, T cut, const Window<T> w) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    backward_range<T, KIND, MODE, Leak>(u, go, out, leak, steps, n, begin, end, th,
                                        cut, w);
  });
}

template <typename T, int KIND, typename Leak>
void backward_mode(int mode, const T* u, const T* go, T* out, const Leak leak,
                   int64_t steps, int64_t n, T th, T cut, const Window<T> w) {
  switch (mode) {
    case SPATIAL:
      return run_backward<T, KIND, SPATIAL, Leak>(u, go, out, leak, steps, n, th, cut,
                                                  w);
    case LEAK:
      return run_backward<T, KIND, LEAK, Leak>(u, go, out, leak, steps, n, th, cut, w);
    default:
      return run_backward<T, KIND, FULL, Leak>(u, go, out, leak, steps, n, th, cut, w);
  }
}

template <typename T, typename Leak>
void backward_kind(int kind, int mode, const T* u, const T* go, T* out,
                   const Leak leak, int64_t steps, int64_t n, T th, T cut,
                   const Window<T> w) {
  switch (kind) {
    case H1:
      return backward_mode<T, H1, Leak>(mode, u, go, out, leak, steps, n, th, cut, w);
    case H2:
      return backward_mode<T, H2, Leak>(mode, u, go, out, leak, steps, n, th, cut, w);
    case H3:
      return backward_mode<T, H3, Leak>(mode, u, go, out, leak, steps, n, th, cut, w);
    default:
      return backward_mode<T, H4, Leak>(mode, u, go, out, leak, steps, n, th, cut, w);
  }
}

void check(const torch::Tensor& t, const torch::Tensor& like, const char* name) {
  TORCH_CHECK(t.is_contiguous() && t.device().is_cpu(), name,
              ": expected a contiguous CPU tensor");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, ": dtype mismatch");
}

// whether the leak constants are one value each (true) or one per neuron (false)
bool uniform_constants(const std::vector<torch::Tensor>& consts, int64_t n) {
  const int64_t size = consts.front().numel();
  TORCH_CHECK(size == 1 || size == n, "leak constants: expected 1 or n values");
  for (const auto& c : consts) {
    TORCH_CHECK(c.dim() == 1 && c.numel() == size,
                "leak constants: all must have the same length");
  }
  return size == 1;
}

template <typename T>
Uniform<T> uniform_leak(const std::vector<torch::Tensor>& c) {
  return {c[0].data_ptr<T>()[0], c[1].data_ptr<T>()[0], c[2].data_ptr<T>()[0],
          c[3].data_ptr<T>()[0]};
}

template <typename T>
PerNeuron<T> per_neuron_leak(const std::vector<torch::Tensor>& c) {
  return {c[0].data_ptr<T>(), c[1].data_ptr<T>(), c[2].data_ptr<T>(),
          c[3].data_ptr<T>()};
}

}  // namespace

// The float32 cut for the kernels in native_linear.cpp (one definition of g(u)).
float firing_cut_f32(double threshold, bool strict) {
  return firing_cut<float>(threshold, strict);
}

// x: [T, N] contiguous; f_fired, f_quiet: [1] or [N] → (u, o): [T, N] each; u is
// empty ([0]) when keep_u is false
std::vector<torch::Tensor> forward(torch::Tensor x, torch::Tensor f_fired,
                                   torch::Tensor f_quiet, double threshold,
                                   bool strict, bool keep_u) {
  check(x, x, "x");
  check(f_fired, x, "f_fired");
  check(f_quiet, x, "f_quiet");
  auto u = keep_u ? torch::empty_like(x) : x.new_empty({0});
  auto o = torch::empty_like(x);
  const int64_t steps = x.size(0), n = x.size(1);
  // the forward needs f only: f' slots repeat f, unused
  const std::vector<torch::Tensor> consts{f_fired, f_quiet, f_fired, f_quiet};
  const bool uniform = uniform_constants(consts, n);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* up = keep_u ? u.data_ptr<scalar_t>() : nullptr;
    scalar_t* op = o.data_ptr<scalar_t>();
    const scalar_t cut = firing_cut<scalar_t>(threshold, strict);
    if (uniform) {
      run_forward(xp, up, op, uniform_leak<scalar_t>(consts), steps, n, cut);
    } else {
      run_forward(xp, up, op, per_neuron_leak<scalar_t>(consts), steps, n, cut);
    }
  });
  return {u, o};
}

// u, go: [T, N]; f_fired, f_quiet, fp_fired, fp_quiet: [1] or [N] → dL/dx: [T, N]
torch::Tensor backward(torch::Tensor u, torch::Tensor go, torch::Tensor f_fired,
                       torch::Tensor f_quiet, torch::Tensor fp_fired,
                       torch::Tensor fp_quiet, double threshold, bool strict,
                       int64_t kind, double a, bool td_grad, bool detach_reset) {
  check(u, u, "u");
  check(go, u, "grad");
  const std::vector<torch::Tensor> consts{f_fired, f_quiet, fp_fired, fp_quiet};
  for (const auto& c : consts) check(c, u, "leak constant");
  auto grad = torch::empty_like(u);
  const int64_t steps = u.size(0), n = u.size(1);
  const bool uniform = uniform_constants(consts, n);
  const int mode = !td_grad ? SPATIAL : (detach_reset ? LEAK : FULL);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "lif_backward", [&] {
    const scalar_t* up = u.data_ptr<scalar_t>();
    const scalar_t* gp = go.data_ptr<scalar_t>();
    scalar_t* out = grad.data_ptr<scalar_t>();
    const scalar_t th = static_cast<scalar_t>(threshold);
    const scalar_t cut = firing_cut<scalar_t>(threshold, strict);
    const Window<scalar_t> w(a);
    const int k = static_cast<int>(kind);
    if (uniform) {
      backward_kind(k, mode, up, gp, out, uniform_leak<scalar_t>(consts), steps, n, th,
                    cut, w);
    } else {
      backward_kind(k, mode, up, gp, out, per_neuron_leak<scalar_t>(consts), steps, n,
                    th, cut, w);
    }
  });
  return grad;
}

// ---- k×k average pooling, stride k, floor (nn.AvgPool2d(k)) on [N, H, W] planes --
// forward  y[ho][wo] = (Σ_{i<k} Σ_{j<k} x[ho·k+i][wo·k+j]) / (k·k), summed row by row
//          as torch's own kernel does; backward  dx[h][w] = dy[h/k][w/k] / (k·k)
//          inside the pooled area, 0 in the rows and columns the floor drops.
namespace {

template <typename T>
NOINLINE void pool_plane(const T* __restrict__ x, T* __restrict__ y, int64_t h,
                         int64_t w, int64_t k) {
  const int64_t ho = h / k, wo = w / k;
  const T divisor = static_cast<T>(k * k);
  for (int64_t r = 0; r < ho; ++r) {
    T* __restrict__ out = y + r * wo;
    for (int64_t c = 0; c < wo; ++c) {
      T sum = 0;
      for (int64_t i = 0; i < k; ++i) {
        const T* row = x + (r * k + i) * w + c * k;
        for (int64_t j = 0; j < k; ++j) sum += row[j];
      }
      out[c] = sum / divisor;
    }
  }
}

template <typename T>
NOINLINE void pool_plane_2(const T* __restrict__ x, T* __restrict__ y, int64_t h,
                           int64_t w) {  // k = 2, the common case, vectorisable
  const int64_t ho = h / 2, wo = w / 2;
  for (int64_t r = 0; r < ho; ++r) {
    const T* __restrict__ top = x + (2 * r) * w;
    const T* __restrict__ bottom = top + w;
    T* __restrict__ out = y + r * wo;
    for (int64_t c = 0; c < wo; ++c) {
      const T sum = ((top[2 * c] + top[2 * c + 1]) + bottom[2 * c]) + bottom[2 * c + 1];
      out[c] = sum / T(4);
    }
  }
}

template <typename T>
NOINLINE void unpool_plane(const T* __restrict__ dy, T* __restrict__ dx, int64_t h,
                           int64_t w, int64_t k) {
  const int64_t ho = h / k, wo = w / k;
  const T divisor = static_cast<T>(k * k);
  for (int64_t r = 0; r < h; ++r) {
    T* __restrict__ out = dx + r * w;
    if (r >= ho * k) {
      for (int64_t c = 0; c < w; ++c) out[c] = T(0);
      continue;
    }
    const T* __restrict__ in = dy + (r / k) * wo;
    if (k == 2) {
      for (int64_t c = 0; c < wo; ++c) {
        const T share = in[c] / T(4);
        out[2 * c] = share;
        out[2 * c + 1] = share;
      }
    } else {
      for (int64_t c = 0; c < wo; ++c) {
        const T share = in[c] / divisor;
        for (int64_t j = 0; j < k; ++j) out[c * k + j] = share;
      }
    }
    for (int64_t c = wo * k; c < w; ++c) out[c] = T(0);
  }
}

}  // namespace

// x: [N, C, H, W] contiguous → [N, C, H/k, W/k]
torch::Tensor avg_pool_forward(torch::Tensor x, int64_t k) {
  check(x, x, "x");
  TORCH_CHECK(x.dim() == 4 && k >= 1, "avg_pool: expected [N, C, H, W] and k >= 1");
  const int64_t planes = x.size(0) * x.size(1), h = x.size(2), w = x.size(3);
  auto y = torch::empty({x.size(0), x.size(1), h / k, w / k}, x.options());
  const int64_t plane_in = h * w, plane_out = (h / k) * (w / k);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "avg_pool_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, planes, 16, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        if (k == 2) {
          pool_plane_2<scalar_t>(xp + p * plane_in, yp + p * plane_out, h, w);
        } else {
          pool_plane<scalar_t>(xp + p * plane_in, yp + p * plane_out, h, w, k);
        }
      }
    });
  });
  return y;
}

// dy: [N, C, H/k, W/k] contiguous → dx: [N, C, H, W]
torch::Tensor avg_pool_backward(torch::Tensor dy, int64_t h, int64_t w, int64_t k) {
  check(dy, dy, "grad");
  const int64_t planes = dy.size(0) * dy.size(1);
  auto dx = torch::empty({dy.size(0), dy.size(1), h, w}, dy.options());
  const int64_t plane_in = (h / k) * (w / k), plane_out = h * w;
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "avg_pool_backward", [&] {
    const scalar_t* gp = dy.data_ptr<scalar_t>();
    scalar_t* dp = dx.data_ptr<scalar_t>();
    at::parallel_for(0, planes, 16, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        unpool_plane<scalar_t>(gp + p * plane_in, dp + p * plane_out, h, w, k);
      }
    });
  });
  return dx;
}

// native_linear.cpp (compiled into the same extension)
std::vector<torch::Tensor> event_rows(torch::Tensor x, int64_t steps, int64_t max_nnz);
std::vector<torch::Tensor> pack_weight(torch::Tensor weight, torch::Tensor bias);
torch::Tensor event_forward(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                            torch::Tensor packed, torch::Tensor pbias, int64_t outs);
torch::Tensor event_wgrad(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                          torch::Tensor g, int64_t ins);
torch::Tensor event_forward_delta(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                                  torch::Tensor bptr, torch::Tensor bidx,
                                  torch::Tensor packed, torch::Tensor pbias, int64_t outs);
torch::Tensor event_wgrad_delta(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                                torch::Tensor bptr, torch::Tensor bidx, torch::Tensor g,
                                int64_t ins);
torch::Tensor event_forward_lif(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                                torch::Tensor bptr, torch::Tensor bidx, torch::Tensor packed,
                                torch::Tensor pbias, int64_t outs, int64_t steps, double f1,
                                double f0, double threshold, bool strict);
// native_rate.cpp
torch::Tensor rate_encode(torch::Tensor k, int64_t steps, int64_t key);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "LIF recurrence, forward: (u, spikes)");
  m.def("backward", &backward, "LIF recurrence, section-4 backward");
  m.def("avg_pool_forward", &avg_pool_forward, "k x k average pool, stride k");
  m.def("avg_pool_backward", &avg_pool_backward, "its gradient");
  m.def("event_rows", &event_rows, "x's temporal deltas or nonzero lists (CSR)");
  m.def("event_forward_delta", &event_forward_delta, "x·Wᵀ + b from the temporal deltas");
  m.def("event_wgrad_delta", &event_wgrad_delta, "gᵀ·x from the temporal deltas");
  m.def("pack_weight", &pack_weight, "Linear weights in blocks of 32 outputs");
  m.def("event_forward", &event_forward, "x·Wᵀ + b over the nonzero inputs");
  m.def("event_wgrad", &event_wgrad, "gᵀ·x over the nonzero inputs");
  m.def("event_forward_lif", &event_forward_lif, "the product and its LIF neurons (eval)");
  m.def("rate_encode", &rate_encode, "Bernoulli rate coding of uint8 intensities");
}
