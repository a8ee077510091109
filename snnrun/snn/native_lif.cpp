// The STBP LIF recurrence as one C++ loop per neuron (CPU), forward and backward.
// Built on first use by torch.utils.cpp_extension (snnrun/snn/native.py); the math
// is that of snnrun/snn/fused.py, element by element:
//   forward   u[0] = x[0];  u[t] = f(o[t-1]) * u[t-1] + x[t];  o[t] = g(u[t])
//   backward  du[t] = go[t]*h(u[t]) + du[t+1]*(f(o[t]) + u[t]*f'(o[t])*h(u[t]))
// f(0), f(1) come in as tensors computed by lif.leak_reset (same rounding as the
// reference); the product and the sum are rounded separately (-ffp-contract=off).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>

namespace {

enum Surrogate { H1 = 1, H2 = 2, H3 = 3, H4 = 4 };

template <typename scalar_t>
inline scalar_t slope(scalar_t delta, int kind, scalar_t a) {
  switch (kind) {
    case H1:
      return std::abs(delta) < scalar_t(0.5) * a ? scalar_t(1) / a : scalar_t(0);
    case H2: {
      const scalar_t root = std::sqrt(a);
      const scalar_t mag = std::abs(delta);
      return mag < scalar_t(2) / root ? scalar_t(0.5) * root - scalar_t(0.25) * a * mag
                                      : scalar_t(0);
    }
    case H3: {
      const scalar_t s = scalar_t(1) / (scalar_t(1) + std::exp(-delta / a));
      return s * (scalar_t(1) - s) / a;
    }
    default:
      return std::exp(delta * delta / (scalar_t(-2) * a)) /
             std::sqrt(scalar_t(2) * scalar_t(M_PI) * a);
  }
}

template <typename scalar_t>
inline bool fires(scalar_t u, scalar_t threshold, bool strict) {
  return strict ? u > threshold : u >= threshold;
}

}  // namespace

// x: [T, N] contiguous; f_fired, f_quiet: [N] → u: [T, N]
torch::Tensor forward(torch::Tensor x, torch::Tensor f_fired, torch::Tensor f_quiet,
                      double threshold, bool strict) {
  auto u = torch::empty_like(x);
  const int64_t steps = x.size(0), n = x.size(1);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* f1 = f_fired.data_ptr<scalar_t>();
    const scalar_t* f0 = f_quiet.data_ptr<scalar_t>();
    scalar_t* up = u.data_ptr<scalar_t>();
    const scalar_t th = static_cast<scalar_t>(threshold);
    // chunks of neurons, time outer and neurons inner: contiguous, vectorisable
    at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) up[i] = xp[i];
      for (int64_t t = 1; t < steps; ++t) {
        const scalar_t* prev = up + (t - 1) * n;
        const scalar_t* xt = xp + t * n;
        scalar_t* ut = up + t * n;
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t f = fires(prev[i], th, strict) ? f1[i] : f0[i];
          const scalar_t product = f * prev[i];
          ut[i] = product + xt[i];
        }
      }
    });
  });
  return u;
}

// u, go: [T, N]; f_fired, f_quiet, fp_fired, fp_quiet: [N] → dL/dx: [T, N]
torch::Tensor backward(torch::Tensor u, torch::Tensor go, torch::Tensor f_fired,
                       torch::Tensor f_quiet, torch::Tensor fp_fired,
                       torch::Tensor fp_quiet, double threshold, bool strict,
                       int64_t kind, double a, bool td_grad, bool detach_reset) {
  auto grad = torch::empty_like(u);
  const int64_t steps = u.size(0), n = u.size(1);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "lif_backward", [&] {
    const scalar_t* up = u.data_ptr<scalar_t>();
    const scalar_t* gp = go.data_ptr<scalar_t>();
    const scalar_t* f1 = f_fired.data_ptr<scalar_t>();
    const scalar_t* f0 = f_quiet.data_ptr<scalar_t>();
    const scalar_t* d1 = fp_fired.data_ptr<scalar_t>();
    const scalar_t* d0 = fp_quiet.data_ptr<scalar_t>();
    scalar_t* out = grad.data_ptr<scalar_t>();
    const scalar_t th = static_cast<scalar_t>(threshold);
    const scalar_t width = static_cast<scalar_t>(a);
    at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
      // out[t] holds du[t]; the temporal term reads du[t+1] from the row above
      for (int64_t t = steps - 1; t >= 0; --t) {
        const scalar_t* ut = up + t * n;
        const scalar_t* gt = gp + t * n;
        scalar_t* dt = out + t * n;
        const bool last = t == steps - 1;
        const scalar_t* dnext = out + (t + 1) * n;
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t v = ut[i];
          const scalar_t h = slope<scalar_t>(v - th, static_cast<int>(kind), width);
          scalar_t du = gt[i] * h;
          if (td_grad && !last) {
            const bool fired = fires(v, th, strict);
            scalar_t carry = fired ? f1[i] : f0[i];
            if (!detach_reset) carry += v * (fired ? d1[i] : d0[i]) * h;
            du += dnext[i] * carry;
          }
          dt[i] = du;
        }
      }
    });
  });
  return grad;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "LIF recurrence, forward");
  m.def("backward", &backward, "LIF recurrence, section-4 backward");
}
