// Event-driven products for a Linear layer whose input is spikes (CPU, float32).
// Built with native_lif.cpp into one extension (snnrun/snn/native.py); bound there.
//
// y = x·Wᵀ + b and dW = gᵀ·x where x [N, I] is mostly zeros (rate-coded MNIST: 13%
// ones): instead of a dense GEMM over all I inputs, each row of x is turned into the
// list of its nonzero columns (and values, unless every one is 1), and a row of y is
// the bias plus the weight rows of those columns only — 1/density less work.
//   forward   y[n, :]  = b + Σ_{i: x[n,i] ≠ 0} x[n,i] · Wᵀ[i, :]   (i ascending)
//   weights   dWᵀ[i, :] = Σ_{n: x[n,i] ≠ 0} x[n,i] · g[n, :]       (n ascending)
// Each output element is summed by one thread in that fixed order: the result does not
// depend on the thread count (a dense GEMM's blocking does), and differs from the
// dense product by float rounding only (tests/snn/test_event_linear.py).
//
// Temporal deltas (delta_rows and the *_delta products below): for 0/1 spikes whose
// rows are T time-major steps, each sample's majority pattern is summed once and each
// step only where it differs from it (±1) — rate coding repeats most of a sample's
// spikes from step to step (tests/snn/test_event_deltas.py).
//
// Speed: the weights are repacked per call into blocks [O/C, I, C] of C = 32 outputs,
// so one block's rows (I·128 B, e.g. 100 KB for I = 784) stay in the L2 cache while
// every row of x walks its nonzero columns, and the C partial sums stay in registers
// (four 8-float vectors, GCC/Clang vector extensions). Measured on a 2-core AVX2 CPU,
// [3000, 784] at 13% ones times [784, 800]: 8 ms against torch's dense 35 ms.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstring>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define NOINLINE __attribute__((noinline))

namespace {

typedef float v8 __attribute__((vector_size(32), aligned(4)));  // unaligned loads
constexpr int kVectors = 4;
constexpr int64_t kChunk = 8 * kVectors;  // outputs per block: 32

struct Rows {  // x [N, I] as the sorted nonzero columns of every row (CSR)
  const int64_t* ptr;  // [N + 1]: row n's entries are ptr[n] .. ptr[n + 1] - 1
  const int32_t* idx;  // [nnz] column of each entry
  const float* val;    // [nnz] its value; nullptr: every value is 1
};

inline v8 load(const float* p) { return *reinterpret_cast<const v8*>(p); }
inline void store(float* p, v8 v) { *reinterpret_cast<v8*>(p) = v; }

// Where a row's sums start: the bias (period 1, stride 0), or, for the temporal
// deltas, row n % period of a [period, ⌈O/C⌉·C] base (this block's columns).
struct Init {
  const float* at;
  int64_t stride, period;
};

// Rows r0..r1 of one output block: y[n, o0 : o0 + width] (width ≤ kChunk; the packed
// weights and bias are zero beyond O, so a partial block computes zeros there).
template <bool BINARY>
NOINLINE void forward_block(Rows x, const float* __restrict__ wblock, Init init,
                            float* __restrict__ y, int64_t r0, int64_t r1,
                            int64_t out_stride, int64_t width) {
  for (int64_t n = r0; n < r1; ++n) {
    v8 even[kVectors], odd[kVectors];
    const float* start = init.at + (n % init.period) * init.stride;
#pragma GCC unroll 4
    for (int j = 0; j < kVectors; ++j) {
      even[j] = load(start + 8 * j);
      odd[j] = v8{};
    }
    int64_t k = x.ptr[n];
    const int64_t stop = x.ptr[n + 1];
    for (; k + 1 < stop; k += 2) {
      const float* w0 = wblock + int64_t(x.idx[k]) * kChunk;
      const float* w1 = wblock + int64_t(x.idx[k + 1]) * kChunk;
      if constexpr (BINARY) {
#pragma GCC unroll 4
        for (int j = 0; j < kVectors; ++j) {
          even[j] += load(w0 + 8 * j);
          odd[j] += load(w1 + 8 * j);
        }
      } else {
        const float v0 = x.val[k], v1 = x.val[k + 1];
#pragma GCC unroll 4
        for (int j = 0; j < kVectors; ++j) {
          even[j] += v0 * load(w0 + 8 * j);
          odd[j] += v1 * load(w1 + 8 * j);
        }
      }
    }
    if (k < stop) {
      const float* w = wblock + int64_t(x.idx[k]) * kChunk;
      const float v = BINARY ? 1.0f : x.val[k];
#pragma GCC unroll 4
      for (int j = 0; j < kVectors; ++j) even[j] += BINARY ? load(w + 8 * j) : v * load(w + 8 * j);
    }
    float* out = y + n * out_stride;
    v8 acc[kVectors];
#pragma GCC unroll 4
    for (int j = 0; j < kVectors; ++j) acc[j] = even[j] + odd[j];
    if (width == kChunk) {
#pragma GCC unroll 4
      for (int j = 0; j < kVectors; ++j) store(out + 8 * j, acc[j]);
    } else {
      float tail[kChunk];
      for (int j = 0; j < kVectors; ++j) store(tail + 8 * j, acc[j]);
      std::memcpy(out, tail, sizeof(float) * width);
    }
  }
}

// One output block of dWᵀ, [I, kChunk], accumulated over every row of x: row n adds
// g[n, block] (in registers) to the rows of its nonzero columns (in L2).
template <bool BINARY>
NOINLINE void wgrad_block(Rows x, int64_t rows, const float* __restrict__ g,
                          int64_t g_stride, int64_t width, float* __restrict__ dblock) {
  for (int64_t n = 0; n < rows; ++n) {
    float padded[kChunk] = {0};
    const float* gr = g + n * g_stride;
    if (width < kChunk) {
      std::memcpy(padded, gr, sizeof(float) * width);
      gr = padded;
    }
    v8 gv[kVectors];
#pragma GCC unroll 4
    for (int j = 0; j < kVectors; ++j) gv[j] = load(gr + 8 * j);
    for (int64_t k = x.ptr[n]; k < x.ptr[n + 1]; ++k) {
      float* d = dblock + int64_t(x.idx[k]) * kChunk;
      if constexpr (BINARY) {
#pragma GCC unroll 4
        for (int j = 0; j < kVectors; ++j) store(d + 8 * j, load(d + 8 * j) + gv[j]);
      } else {
        const float v = x.val[k];
#pragma GCC unroll 4
        for (int j = 0; j < kVectors; ++j)
          store(d + 8 * j, load(d + 8 * j) + v * gv[j]);
      }
    }
  }
}

// The columns (idx) and values (val) of r's nonzero entries, in order; both need room
// for n + 1 entries (the branch-free tail writes one past the last). Returns their
// count; *odd becomes true if one of them is not 1.
#if defined(__AVX2__)
struct Compress {  // for each 8-bit mask, the lanes of its set bits first
  alignas(32) int32_t lanes[256][8];
  Compress() {
    for (int mask = 0; mask < 256; ++mask) {
      int k = 0;
      for (int bit = 0; bit < 8; ++bit)
        if (mask >> bit & 1) lanes[mask][k++] = bit;
      while (k < 8) lanes[mask][k++] = 0;
    }
  }
};
const Compress kCompress;

// 8 columns at a time: compare with 0 (and 1), then one permutation stores the
// nonzero lanes' columns and values first; the write pointer moves by their count.
NOINLINE int64_t fill_row(const float* __restrict__ r, int64_t n, int32_t* __restrict__ idx,
                          float* __restrict__ val, bool* odd) {
  int64_t k = 0, i = 0;
  int others = 0;
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(r + i);
    const __m256 nonzero = _mm256_cmp_ps(v, zero, _CMP_NEQ_UQ);
    const int mask = _mm256_movemask_ps(nonzero);
    others |= _mm256_movemask_ps(_mm256_and_ps(nonzero, _mm256_cmp_ps(v, one, _CMP_NEQ_UQ)));
    const __m256i lanes =
        _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress.lanes[mask]));
    const __m256i cols = _mm256_add_epi32(_mm256_set1_epi32(int32_t(i)), lanes);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + k), cols);
    _mm256_storeu_ps(val + k, _mm256_permutevar8x32_ps(v, lanes));
    k += __builtin_popcount(unsigned(mask));
  }
  bool tail_odd = false;
  for (; i < n; ++i) {
    idx[k] = static_cast<int32_t>(i);
    val[k] = r[i];
    tail_odd |= (r[i] != 0.0f) & (r[i] != 1.0f);
    k += r[i] != 0.0f;
  }
  if (others || tail_odd) *odd = true;
  return k;
}
#else
NOINLINE int64_t fill_row(const float* __restrict__ r, int64_t n, int32_t* __restrict__ idx,
                          float* __restrict__ val, bool* odd) {
  int64_t k = 0;  // branch-free: write every column, advance past the nonzero ones
  bool others = false;
  for (int64_t i = 0; i < n; ++i) {
    idx[k] = static_cast<int32_t>(i);
    val[k] = r[i];
    others |= (r[i] != 0.0f) & (r[i] != 1.0f);
    k += r[i] != 0.0f;
  }
  if (others) *odd = true;
  return k;
}
#endif

// The columns (idx) where a 0/1 row r differs from the 0/1 base a, with r − a (±1,
// val), in order; both need room for n + 1 entries. Returns their count, adds r's
// nonzero count to *ones; *odd becomes true if r holds a value other than 0 and 1.
#if defined(__AVX2__)
NOINLINE int64_t diff_row(const float* __restrict__ r, const float* __restrict__ a,
                          int64_t n, int32_t* __restrict__ idx, float* __restrict__ val,
                          int64_t* ones, bool* odd) {
  int64_t k = 0, i = 0, count = 0;
  int others = 0;
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(r + i), base = _mm256_loadu_ps(a + i);
    const __m256 nonzero = _mm256_cmp_ps(v, zero, _CMP_NEQ_UQ);
    count += __builtin_popcount(unsigned(_mm256_movemask_ps(nonzero)));
    others |= _mm256_movemask_ps(_mm256_and_ps(nonzero, _mm256_cmp_ps(v, one, _CMP_NEQ_UQ)));
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(v, base, _CMP_NEQ_UQ));
    const __m256i lanes =
        _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress.lanes[mask]));
    const __m256i cols = _mm256_add_epi32(_mm256_set1_epi32(int32_t(i)), lanes);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + k), cols);
    _mm256_storeu_ps(val + k, _mm256_permutevar8x32_ps(_mm256_sub_ps(v, base), lanes));
    k += __builtin_popcount(unsigned(mask));
  }
  bool tail_odd = false;
  for (; i < n; ++i) {
    idx[k] = static_cast<int32_t>(i);
    val[k] = r[i] - a[i];
    count += r[i] != 0.0f;
    tail_odd |= (r[i] != 0.0f) & (r[i] != 1.0f);
    k += r[i] != a[i];
  }
  if (others || tail_odd) *odd = true;
  *ones += count;
  return k;
}
#else
NOINLINE int64_t diff_row(const float* __restrict__ r, const float* __restrict__ a,
                          int64_t n, int32_t* __restrict__ idx, float* __restrict__ val,
                          int64_t* ones, bool* odd) {
  int64_t k = 0, count = 0;
  bool others = false;
  for (int64_t i = 0; i < n; ++i) {
    idx[k] = static_cast<int32_t>(i);
    val[k] = r[i] - a[i];
    count += r[i] != 0.0f;
    others |= (r[i] != 0.0f) & (r[i] != 1.0f);
    k += r[i] != a[i];
  }
  if (others) *odd = true;
  *ones += count;
  return k;
}
#endif

Rows view(const torch::Tensor& ptr, const torch::Tensor& idx, const torch::Tensor& val) {
  return {ptr.data_ptr<int64_t>(), idx.data_ptr<int32_t>(),
          val.numel() ? val.data_ptr<float>() : nullptr};
}

void check_float(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 &&
                  t.is_contiguous(),
              name, ": expected a contiguous float32 CPU tensor");
}

}  // namespace

// x [N, I] → (ptr [N + 1] int64, idx [nnz] int32, val [nnz] float32 or [0] when every
// nonzero is 1); all three empty when x has more than max_nnz nonzeros (the caller
// then runs the dense product). One pass over x: each thread lists its own rows into
// a buffer of its own (and stops once past max_nnz), then the lists are copied into
// place behind each other.
std::vector<torch::Tensor> spike_rows(torch::Tensor x, int64_t max_nnz) {
  check_float(x, "x");
  TORCH_CHECK(x.dim() == 2, "spike_rows: expected x [N, I]");
  const int64_t rows = x.size(0), cols = x.size(1);
  auto ptr = torch::empty({rows + 1}, torch::kInt64);
  int64_t* p = ptr.data_ptr<int64_t>();
  const float* xp = x.data_ptr<float>();
  const int64_t parts = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), (rows + 63) / 64));
  const int64_t per = (rows + parts - 1) / parts;
  struct Part {
    torch::Tensor idx, val;
    int64_t count = 0;
    bool odd = false, over = false;
  };
  std::vector<Part> part(parts);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      Part& s = part[q];
      const int64_t r0 = std::min(rows, q * per), r1 = std::min(rows, r0 + per);
      // k ≤ max_nnz before every row (else it stops), and a row adds ≤ cols + 1
      const int64_t room = std::min((r1 - r0) * cols, max_nnz) + cols + 1;
      s.idx = torch::empty({room}, torch::kInt32);
      s.val = torch::empty({room}, torch::kFloat32);
      int32_t* ib = s.idx.data_ptr<int32_t>();
      float* vb = s.val.data_ptr<float>();
      int64_t k = 0;
      for (int64_t n = r0; n < r1 && !s.over; ++n) {
        const int64_t c = fill_row(xp + n * cols, cols, ib + k, vb + k, &s.odd);
        p[n + 1] = c;
        k += c;
        s.over = k > max_nnz;
      }
      s.count = k;
    }
  });
  int64_t nnz = 0;
  bool binary = true;
  for (const Part& s : part) {
    if (s.over) nnz = max_nnz + 1;
    nnz += s.count;
    binary = binary && !s.odd;
  }
  const auto none = torch::empty({0}, torch::kInt64);
  if (nnz > max_nnz) return {none, none.to(torch::kInt32), x.new_empty({0})};
  p[0] = 0;
  for (int64_t n = 0; n < rows; ++n) p[n + 1] += p[n];
  auto idx = torch::empty({nnz}, torch::kInt32);
  auto val = x.new_empty({binary ? 0 : nnz});
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const Part& s = part[q];
      const int64_t at = p[std::min(rows, q * per)];
      std::memcpy(idx.data_ptr<int32_t>() + at, s.idx.data_ptr<int32_t>(),
                  sizeof(int32_t) * s.count);
      if (!binary)
        std::memcpy(val.data_ptr<float>() + at, s.val.data_ptr<float>(),
                    sizeof(float) * s.count);
    }
  });
  return {ptr, idx, val};
}

// base[i] = 1 where more than half of the steps rows r + t·stride hold a 1, else 0.
NOINLINE void majority(const float* __restrict__ r, int64_t stride, int64_t steps,
                       int64_t n, float* __restrict__ base) {
  for (int64_t i = 0; i < n; ++i) base[i] = 0.0f;
  for (int64_t t = 0; t < steps; ++t) {
    const float* __restrict__ row = r + t * stride;
    for (int64_t i = 0; i < n; ++i) base[i] += row[i];
  }
  const float half = 0.5f * float(steps);
  for (int64_t i = 0; i < n; ++i) base[i] = base[i] > half ? 1.0f : 0.0f;
}

// Temporal deltas of spikes x [T·B, I] (row n = t·B + b, time-major as FoldTime
// folds them; steps = T): the base of sample b is its majority pattern,
// A_b = {i : x[t·B + b, i] = 1 for more than T/2 of its steps}, and row n keeps only
// where it differs from its base, with x − a = ±1. Rate-coded MNIST fires most of a
// digit's pixels at nearly every step, so the deltas are ~1/5 of the nonzeros at
// T = 10 (20 against 99 a row) and the bases count once per sample, not per step.
// Returns (ptr [N + 1], idx, val ±1, bptr [B + 1], bidx): bases and deltas, each
// ascending by column. All five empty when x is not 0/1, or when bases and deltas
// together are over max_nnz or not at least a fifth below x's nonzero count (the
// caller then lists the nonzeros themselves, spike_rows).
std::vector<torch::Tensor> delta_rows(torch::Tensor x, int64_t steps, int64_t max_nnz) {
  check_float(x, "x");
  TORCH_CHECK(x.dim() == 2, "delta_rows: expected x [N, I]");
  const int64_t rows = x.size(0), cols = x.size(1);
  const auto none = torch::empty({0}, torch::kInt64);
  const std::vector<torch::Tensor> nothing{none, none.to(torch::kInt32), x.new_empty({0}),
                                           none, none.to(torch::kInt32)};
  if (steps < 2 || rows == 0 || rows % steps != 0) return nothing;
  const int64_t batch = rows / steps;
  const float* xp = x.data_ptr<float>();
  auto ptr = torch::empty({rows + 1}, torch::kInt64);
  auto bptr = torch::empty({batch + 1}, torch::kInt64);
  int64_t* p = ptr.data_ptr<int64_t>();
  int64_t* bp = bptr.data_ptr<int64_t>();
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), batch));
  const int64_t per = (batch + parts - 1) / parts;
  struct Part {
    torch::Tensor idx, val, bidx;
    std::vector<int64_t> start;  // where row t·B + b's deltas begin in idx, (b, t) order
    int64_t count = 0, bcount = 0, ones = 0;
    bool odd = false, over = false;
  };
  std::vector<Part> part(parts);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      Part& s = part[q];
      const int64_t b0 = std::min(batch, q * per), b1 = std::min(batch, b0 + per);
      const int64_t room = std::min((b1 - b0) * steps * cols, max_nnz) + cols + 1;
      s.idx = torch::empty({room}, torch::kInt32);
      s.val = torch::empty({room}, torch::kFloat32);
      s.bidx = torch::empty({(b1 - b0) * cols + 1}, torch::kInt32);
      s.start.resize((b1 - b0) * steps);
      std::vector<float> base(cols), scratch(cols + 1);
      int32_t* ib = s.idx.data_ptr<int32_t>();
      float* vb = s.val.data_ptr<float>();
      for (int64_t b = b0; b < b1 && !s.over && !s.odd; ++b) {
        majority(xp + b * cols, batch * cols, steps, cols, base.data());
        bool unused = false;
        const int64_t c = fill_row(base.data(), cols, s.bidx.data_ptr<int32_t>() + s.bcount,
                                   scratch.data(), &unused);
        bp[b + 1] = c;
        s.bcount += c;
        for (int64_t t = 0; t < steps && !s.over; ++t) {
          const int64_t n = t * batch + b;
          s.start[(b - b0) * steps + t] = s.count;
          const int64_t k = diff_row(xp + n * cols, base.data(), cols, ib + s.count,
                                     vb + s.count, &s.ones, &s.odd);
          p[n + 1] = k;
          s.count += k;
          s.over = s.count > max_nnz;
        }
      }
    }
  });
  int64_t deltas = 0, bases = 0, ones = 0;
  for (const Part& s : part) {
    if (s.over || s.odd) return nothing;
    deltas += s.count;
    bases += s.bcount;
    ones += s.ones;
  }
  if (deltas + bases > max_nnz || 5 * (deltas + bases) > 4 * ones) return nothing;
  p[0] = 0;
  for (int64_t n = 0; n < rows; ++n) p[n + 1] += p[n];
  bp[0] = 0;
  for (int64_t b = 0; b < batch; ++b) bp[b + 1] += bp[b];
  auto idx = torch::empty({deltas}, torch::kInt32);
  auto val = x.new_empty({deltas});
  auto bidx = torch::empty({bases}, torch::kInt32);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const Part& s = part[q];
      const int64_t b0 = std::min(batch, q * per), b1 = std::min(batch, b0 + per);
      std::memcpy(bidx.data_ptr<int32_t>() + bp[b0], s.bidx.data_ptr<int32_t>(),
                  sizeof(int32_t) * s.bcount);
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t t = 0; t < steps; ++t) {
          const int64_t n = t * batch + b, from = s.start[(b - b0) * steps + t];
          const int64_t count = p[n + 1] - p[n];
          std::memcpy(idx.data_ptr<int32_t>() + p[n], s.idx.data_ptr<int32_t>() + from,
                      sizeof(int32_t) * count);
          std::memcpy(val.data_ptr<float>() + p[n], s.val.data_ptr<float>() + from,
                      sizeof(float) * count);
        }
      }
    }
  });
  return {ptr, idx, val, bptr, bidx};
}

// weight [O, I], bias [O] → blocks [ceil(O / C), I, C] and bias [ceil(O / C) · C],
// zero beyond O.
std::vector<torch::Tensor> pack_weight(torch::Tensor weight, torch::Tensor bias) {
  check_float(weight, "weight");
  check_float(bias, "bias");
  const int64_t outs = weight.size(0), ins = weight.size(1);
  const int64_t blocks = (outs + kChunk - 1) / kChunk;
  auto packed = torch::empty({blocks, ins, kChunk}, weight.options());
  auto pbias = torch::zeros({blocks * kChunk}, weight.options());
  std::memcpy(pbias.data_ptr<float>(), bias.data_ptr<float>(), sizeof(float) * outs);
  const float* w = weight.data_ptr<float>();
  float* out = packed.data_ptr<float>();
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* block = out + b * ins * kChunk;
      for (int64_t j = 0; j < kChunk; ++j) {
        const int64_t o = b * kChunk + j;
        if (o >= outs) {
          for (int64_t i = 0; i < ins; ++i) block[i * kChunk + j] = 0.0f;
          continue;
        }
        const float* row = w + o * ins;
        for (int64_t i = 0; i < ins; ++i) block[i * kChunk + j] = row[i];
      }
    }
  });
  return {packed, pbias};
}

namespace {

// y [rows, outs] = init + the rows of x times the packed weights (event_forward).
torch::Tensor forward_rows(Rows x, int64_t rows, const torch::Tensor& packed, Init init,
                           int64_t outs) {
  const int64_t blocks = packed.size(0), ins = packed.size(1);
  auto y = torch::empty({rows, outs}, packed.options());
  const float* wp = packed.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, rows, 32, [&](int64_t begin, int64_t end) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t width = std::min(kChunk, outs - b * kChunk);
      const float* wb = wp + b * ins * kChunk;
      const Init at{init.at + b * kChunk, init.stride, init.period};
      if (x.val == nullptr) {
        forward_block<true>(x, wb, at, yp + b * kChunk, begin, end, outs, width);
      } else {
        forward_block<false>(x, wb, at, yp + b * kChunk, begin, end, outs, width);
      }
    }
  });
  return y;
}

void check_packed(const torch::Tensor& packed, const torch::Tensor& pbias, int64_t outs) {
  check_float(packed, "packed");
  const int64_t blocks = packed.size(0);
  TORCH_CHECK(blocks * kChunk >= outs && pbias.numel() == blocks * kChunk,
              "event_forward: packed weights do not cover the outputs");
}

}  // namespace

// (ptr, idx, val) of x, packed weights and bias → y [N, outs]. (Tiling the rows, so
// that a tile's list and one weight block share the L2 cache, measured no faster.)
torch::Tensor event_forward(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                            torch::Tensor packed, torch::Tensor pbias, int64_t outs) {
  check_packed(packed, pbias, outs);
  const Init bias{pbias.data_ptr<float>(), 0, 1};
  return forward_rows(view(ptr, idx, val), ptr.size(0) - 1, packed, bias, outs);
}

// The same product from x's temporal deltas (delta_rows): first the base of every
// sample, y0[b] = bias + Σ_{i ∈ A_b} Wᵀ[i] ([B, ⌈O/C⌉·C], padded), then
// y[n] = y0[n mod B] + Σ_k val[k]·Wᵀ[idx[k]] over row n's deltas (val = ±1).
torch::Tensor event_forward_delta(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                                  torch::Tensor bptr, torch::Tensor bidx,
                                  torch::Tensor packed, torch::Tensor pbias, int64_t outs) {
  check_packed(packed, pbias, outs);
  const int64_t samples = bptr.size(0) - 1, padded = packed.size(0) * kChunk;
  TORCH_CHECK(samples >= 1 && (ptr.size(0) - 1) % samples == 0,
              "event_forward_delta: rows are not a whole number of steps");
  const Init bias{pbias.data_ptr<float>(), 0, 1};
  const auto none = val.new_empty({0});
  const auto base = forward_rows(view(bptr, bidx, none), samples, packed, bias, padded);
  const Init from_base{base.data_ptr<float>(), padded, samples};
  return forward_rows(view(ptr, idx, val), ptr.size(0) - 1, packed, from_base, outs);
}

// (ptr, idx, val) of x [N, ins], g [N, O] → dW [O, ins]. Measured against a
// column-wise variant (x transposed, dWᵀ summed in registers over g's rows): this
// row-wise one was faster, 11 ms against 15 ms at N = 3000. Tried again with a
// counting sort into (column, tile of 64/256/1024 rows) segments, two sets of sums,
// and (block, column range) work items: no faster at N = 1000 or 3000 (short segments
// cost a mispredicted loop exit each; long ones leave L1), so the row-wise order stays.
torch::Tensor event_wgrad(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                          torch::Tensor g, int64_t ins) {
  check_float(g, "grad");
  const int64_t rows = ptr.size(0) - 1, outs = g.size(1);
  TORCH_CHECK(g.size(0) == rows, "event_wgrad: grad and x differ in rows");
  const int64_t blocks = (outs + kChunk - 1) / kChunk;
  auto dw = torch::empty({outs, ins}, g.options());
  const Rows x = view(ptr, idx, val);
  const float* gp = g.data_ptr<float>();
  float* out = dw.data_ptr<float>();
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> block(ins * kChunk);  // this thread's block of dWᵀ
    for (int64_t b = begin; b < end; ++b) {
      const int64_t width = std::min(kChunk, outs - b * kChunk);
      std::fill(block.begin(), block.end(), 0.0f);
      if (x.val == nullptr) {
        wgrad_block<true>(x, rows, gp + b * kChunk, outs, width, block.data());
      } else {
        wgrad_block<false>(x, rows, gp + b * kChunk, outs, width, block.data());
      }
      for (int64_t j = 0; j < width; ++j) {  // unpack: dW[b·C + j, :]
        float* row = out + (b * kChunk + j) * ins;
        for (int64_t i = 0; i < ins; ++i) row[i] = block[i * kChunk + j];
      }
    }
  });
  return dw;
}

// gᵀ·x from x's temporal deltas (delta_rows): the deltas' weight gradient plus, for
// each sample b, its base A_b times G[b] = Σ_t g[t·B + b] (summed in t order).
torch::Tensor event_wgrad_delta(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                                torch::Tensor bptr, torch::Tensor bidx, torch::Tensor g,
                                int64_t ins) {
  check_float(g, "grad");
  const int64_t rows = ptr.size(0) - 1, samples = bptr.size(0) - 1, outs = g.size(1);
  TORCH_CHECK(samples >= 1 && rows % samples == 0 && g.size(0) == rows,
              "event_wgrad_delta: grad rows are not a whole number of steps");
  auto summed = torch::zeros({samples, outs}, g.options());
  const float* gp = g.data_ptr<float>();
  float* sp = summed.data_ptr<float>();
  at::parallel_for(0, samples, 8, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b)
      for (int64_t t = 0; t < rows / samples; ++t) {
        const float* r = gp + (t * samples + b) * outs;
        for (int64_t o = 0; o < outs; ++o) sp[b * outs + o] += r[o];
      }
  });
  auto dw = event_wgrad(ptr, idx, val, g, ins);
  dw.add_(event_wgrad(bptr, bidx, val.new_empty({0}), summed, ins));
  return dw;
}
