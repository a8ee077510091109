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
// Temporal deltas (event_rows and the *_delta products below): for 0/1 spikes whose
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
#include <atomic>
#include <cstring>
#include <memory>
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

// Row n of one output block, into acc: start (the row's initial sums) plus the
// block's weight rows of n's listed columns, in list order, two running sums.
template <bool BINARY>
inline __attribute__((always_inline)) void row_sums(Rows x, const float* __restrict__ wblock,
                                                    const float* start, int64_t n,
                                                    v8 acc[kVectors]) {
  v8 even[kVectors], odd[kVectors];
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
#pragma GCC unroll 4
  for (int j = 0; j < kVectors; ++j) acc[j] = even[j] + odd[j];
}

// The first `width` (≤ kChunk) values of acc to out.
inline void store_block(float* out, const v8 acc[kVectors], int64_t width) {
  if (width == kChunk) {
#pragma GCC unroll 4
    for (int j = 0; j < kVectors; ++j) store(out + 8 * j, acc[j]);
  } else {
    float tail[kChunk];
    for (int j = 0; j < kVectors; ++j) store(tail + 8 * j, acc[j]);
    std::memcpy(out, tail, sizeof(float) * width);
  }
}

// Rows r0..r1 of one output block: y[n, o0 : o0 + width] (width ≤ kChunk; the packed
// weights and bias are zero beyond O, so a partial block computes zeros there).
template <bool BINARY>
NOINLINE void forward_block(Rows x, const float* __restrict__ wblock, Init init,
                            float* __restrict__ y, int64_t r0, int64_t r1,
                            int64_t out_stride, int64_t width) {
  for (int64_t n = r0; n < r1; ++n) {
    v8 acc[kVectors];
    row_sums<BINARY>(x, wblock, init.at + (n % init.period) * init.stride, n, acc);
    store_block(y + n * out_stride, acc, width);
  }
}

// The LIF neurons after the product (evaluation), for samples b0..b1 of one output
// block: rows in list order (step by step, the samples in turn), each sample's
// potentials u kept in `state` ([b1 − b0, kChunk], in L1) — y is never stored. The
// same arithmetic as native_lif.cpp's forward, element by element: u[0] = y[0],
// u[t] = f(o[t-1])·u[t-1] + y[t] (product and sum rounded separately),
// o[t] = 1[u[t] ≥ cut]; f(1) = f1, f(0) = f0 for every neuron.
template <bool BINARY>
NOINLINE void lif_block(Rows x, const float* __restrict__ wblock, Init init,
                        float* __restrict__ o, int64_t b0, int64_t b1, int64_t batch,
                        int64_t steps, int64_t out_stride, int64_t width, float f1, float f0,
                        float cut, float* __restrict__ state) {
  typedef int32_t v8i __attribute__((vector_size(32)));
  const v8 cuts = v8{} + cut, fired = v8{} + f1, quiet = v8{} + f0, one = v8{} + 1.0f;
  for (int64_t t = 0; t < steps; ++t) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = t * batch + b;
      float* u = state + (b - b0) * kChunk;
      v8 y[kVectors], spikes[kVectors];
      row_sums<BINARY>(x, wblock, init.at + (n % init.period) * init.stride, n, y);
#pragma GCC unroll 4
      for (int j = 0; j < kVectors; ++j) {
        v8 v = y[j];
        if (t > 0) {
          const v8 last = load(u + 8 * j);
          const v8i was = last >= cuts;
          const v8 leak = was ? fired : quiet;
          const v8 product = leak * last;
          v = product + y[j];
        }
        store(u + 8 * j, v);
        const v8i now = v >= cuts;
        spikes[j] = now ? one : v8{};
      }
      store_block(o + n * out_stride, spikes, width);
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

// Building the lists takes two passes over x. Pass 1 (scan_row) counts each row's
// nonzeros, notes any value other than 0 and 1, and, for the temporal deltas, adds the
// row into its sample's tallies. With those counts the lists' sizes are known before
// an entry is written (for the deltas: a group of samples' at a time, decided while
// its rows are in the cache): the deltas are kept or declined, or all lists declined
// past the cap, without building anything twice. Pass 2 (list_row) writes the list.
template <bool TALLY>
NOINLINE int64_t scan_row(const float* __restrict__ r, int64_t n, float* __restrict__ tally,
                          bool* odd) {
  int32_t nonzero = 0, others = 0;  // plain loops: GCC vectorises them
  for (int64_t i = 0; i < n; ++i) {
    const float v = r[i];
    if constexpr (TALLY) tally[i] += v;
    nonzero += v != 0.0f;
    others |= (v != 0.0f) & (v != 1.0f);
  }
  if (others) *odd = true;
  return nonzero;
}

// A sample's base from its tallies c (spikes per input over its T steps): a[i] = 1
// where c > T/2, else 0. Returns |A|; *deltas = Σ T − c over A plus Σ c off it (the
// deltas its rows will list).
NOINLINE int64_t majority(const float* __restrict__ c, int64_t n, int32_t steps,
                          float* __restrict__ a, int64_t* deltas) {
  int32_t on = 0, off = 0;  // plain loops: GCC vectorises them
  for (int64_t i = 0; i < n; ++i) {
    const int32_t count = int32_t(c[i]);
    const bool in = 2 * count > steps;
    a[i] = in ? 1.0f : 0.0f;
    on += in;
    off += in ? steps - count : count;
  }
  *deltas = off;
  return on;
}

enum List { kOnes = 0, kValues = 1, kDeltas = 2 };

// Pass 2 over a row r of n columns: the columns where r differs from its reference
// (kDeltas: the base row a; otherwise 0) into idx, ascending, and r − reference into
// val (kValues, kDeltas; kOnes writes no values: every nonzero is 1). Returns the
// count. idx and val need room for 8 entries past the last one (the vector stores
// write whole lanes).
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

// Eight columns from i: one permutation puts the listed lanes' columns (and values)
// first, the write position moves by their count.
template <int LIST>
inline int64_t emit8(__m256 differ, __m256 out, int64_t i, int32_t* __restrict__ idx,
                     float* __restrict__ val, int64_t k) {
  const int mask = _mm256_movemask_ps(differ);
  const __m256i lanes =
      _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress.lanes[mask]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + k),
                      _mm256_add_epi32(_mm256_set1_epi32(int32_t(i)), lanes));
  if constexpr (LIST != kOnes) _mm256_storeu_ps(val + k, _mm256_permutevar8x32_ps(out, lanes));
  return k + __builtin_popcount(unsigned(mask));
}
#endif

template <int LIST>
NOINLINE int64_t list_row(const float* __restrict__ r, const float* __restrict__ a, int64_t n,
                          int32_t* __restrict__ idx, float* __restrict__ val) {
  int64_t k = 0, i = 0;
#if defined(__AVX2__)
  const __m256 zero = _mm256_setzero_ps();
  auto ref = [&](int64_t j) { return LIST == kDeltas ? _mm256_loadu_ps(a + j) : zero; };
  // 32 columns at a time, skipped at once when none is listed: hidden layers' spikes
  // and the deltas leave most of them empty
  for (; i + 32 <= n; i += 32) {
    __m256 v[4], differ[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      v[q] = _mm256_loadu_ps(r + i + 8 * q);
      differ[q] = _mm256_cmp_ps(v[q], ref(i + 8 * q), _CMP_NEQ_UQ);
    }
    const __m256 any = _mm256_or_ps(_mm256_or_ps(differ[0], differ[1]),
                                    _mm256_or_ps(differ[2], differ[3]));
    if (_mm256_testz_ps(any, any)) continue;
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const __m256 out = LIST == kDeltas ? _mm256_sub_ps(v[q], ref(i + 8 * q)) : v[q];
      k = emit8<LIST>(differ[q], out, i + 8 * q, idx, val, k);
    }
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(r + i), base = ref(i);
    const __m256 out = LIST == kDeltas ? _mm256_sub_ps(v, base) : v;
    k = emit8<LIST>(_mm256_cmp_ps(v, base, _CMP_NEQ_UQ), out, i, idx, val, k);
  }
#endif
  for (; i < n; ++i) {  // branch-free: write every column, advance past the listed ones
    const float reference = LIST == kDeltas ? a[i] : 0.0f;
    idx[k] = static_cast<int32_t>(i);
    if constexpr (LIST != kOnes) val[k] = r[i] - reference;
    k += r[i] != reference;
  }
  return k;
}

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

namespace {

// Pass 2 for the nonzero lists: rows [r0, r1) straight into their place (ptr is
// known from pass 1). A row's vector stores may write up to 8 entries past its end:
// the rows that end within 8 entries of the range's end go through scratch, so that
// nothing reaches into the next range, which another thread writes.
void list_nonzeros(const float* xp, int64_t cols, const int64_t* p, bool values, int64_t r0,
                   int64_t r1, int32_t* idx, float* val) {
  std::vector<int32_t> si(cols + 8);
  std::vector<float> sv(cols + 8);
  for (int64_t n = r0; n < r1; ++n) {
    const bool last = p[n + 1] + 8 > p[r1];
    int32_t* ib = last ? si.data() : idx + p[n];
    float* vb = last ? sv.data() : (values ? val + p[n] : nullptr);
    const float* row = xp + n * cols;
    const int64_t c = values ? list_row<kValues>(row, nullptr, cols, ib, vb)
                             : list_row<kOnes>(row, nullptr, cols, ib, vb);
    if (last) {
      std::memcpy(idx + p[n], si.data(), sizeof(int32_t) * c);
      if (values) std::memcpy(val + p[n], sv.data(), sizeof(float) * c);
    }
  }
}

constexpr int64_t kGroup = 4;  // samples whose rows are listed together (L2-resident)

// One thread's share of the temporal deltas: its samples' bases (bidx, in sample
// order) and their rows' deltas (idx, val, in (group, t, sample) order; where row n
// starts: start[n]), or the flags that stop them.
struct DeltaPart {  // buffers left uninitialised (a zero fill costs as much as the pass)
  std::unique_ptr<int32_t[]> idx, bidx;
  std::unique_ptr<float[]> val;
  int64_t count = 0, bcount = 0;
  bool odd = false, over = false, based = false;
};

// Samples [b0, b1) in groups of kGroup: pass 1 over a group's rows (tallies, nonzero
// counts), its bases, then pass 2 over the same rows while they are still in the
// cache. A group keeps its bases only where bases and deltas together are at least a
// fifth below its nonzeros; otherwise its bases are empty (its deltas are its
// nonzeros, +1 each). Row n's count goes to p[n + 1], its start to start[n], each
// sample's base count to on[b + 1].
void delta_part(const float* xp, int64_t steps, int64_t batch, int64_t cols, int64_t b0,
                int64_t b1, int64_t max_nnz, int64_t* p, int64_t* start, int64_t* on,
                DeltaPart& s) {
  const int64_t room = std::min((b1 - b0) * steps * cols, max_nnz) + cols + 8;
  s.idx.reset(new int32_t[room]);
  s.val.reset(new float[room]);
  s.bidx.reset(new int32_t[(b1 - b0) * cols + 8]);
  std::vector<float> tally(kGroup * cols), base(kGroup * cols);
  std::vector<int64_t> off(kGroup), nonzero(kGroup);
  for (int64_t g0 = b0; g0 < b1; g0 += kGroup) {
    const int64_t size = std::min(kGroup, b1 - g0);
    std::fill(tally.begin(), tally.end(), 0.0f);
    int64_t nonzeros = 0, listed = 0;
    for (int64_t t = 0; t < steps; ++t)
      for (int64_t j = 0; j < size; ++j) {
        const int64_t n = t * batch + g0 + j;
        nonzeros += scan_row<true>(xp + n * cols, cols, &tally[j * cols], &s.odd);
      }
    if (s.odd) return;
    for (int64_t j = 0; j < size; ++j) {
      on[g0 + j + 1] = majority(&tally[j * cols], cols, int32_t(steps), &base[j * cols], &off[j]);
      listed += on[g0 + j + 1] + off[j];
    }
    if (5 * listed > 4 * nonzeros) {  // no pattern worth a base: the nonzeros
      std::fill(base.begin(), base.end(), 0.0f);
      for (int64_t j = 0; j < size; ++j) on[g0 + j + 1] = 0;
    }
    for (int64_t j = 0; j < size; ++j) {
      s.based |= on[g0 + j + 1] > 0;
      s.bcount += list_row<kOnes>(&base[j * cols], nullptr, cols, s.bidx.get() + s.bcount,
                                  nullptr);
    }
    for (int64_t t = 0; t < steps; ++t)
      for (int64_t j = 0; j < size; ++j) {
        const int64_t n = t * batch + g0 + j;
        start[n] = s.count;
        p[n + 1] = list_row<kDeltas>(xp + n * cols, &base[j * cols], cols,
                                     s.idx.get() + s.count, s.val.get() + s.count);
        s.count += p[n + 1];
        s.over = s.count > max_nnz;  // room: max_nnz + one row (and its 8 spare)
        if (s.over) return;
      }
  }
}

// An empty tensor of `n` + 8 entries' room, seen as its first n.
torch::Tensor room(int64_t n, torch::ScalarType type) {
  return torch::empty({n + 8}, type).narrow(0, 0, n);
}

}  // namespace

namespace {

// The temporal-delta lists of event_rows (x's rows time-major, steps ≥ 2): five
// tensors, or all five empty when they would hold more than max_nnz entries; the
// nonzero lists (bptr, bidx and val empty) when no group keeps a base; none at all
// (the caller lists the nonzeros with their values) when x holds values other
// than 0/1. ptr [N + 1] is filled here.
std::vector<torch::Tensor> temporal_deltas(const torch::Tensor& x, int64_t steps,
                                           int64_t max_nnz, torch::Tensor& ptr) {
  const int64_t rows = x.size(0), cols = x.size(1), batch = rows / steps;
  const float* xp = x.data_ptr<float>();
  int64_t* p = ptr.data_ptr<int64_t>();
  auto bptr = torch::zeros({batch + 1}, torch::kInt64);
  int64_t* on = bptr.data_ptr<int64_t>();
  std::vector<int64_t> start(rows);
  const int64_t groups = (batch + kGroup - 1) / kGroup;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), groups));
  const int64_t per = (groups + parts - 1) / parts * kGroup;  // samples per part
  std::vector<DeltaPart> part(parts);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t b0 = std::min(batch, q * per), b1 = std::min(batch, b0 + per);
      delta_part(xp, steps, batch, cols, b0, b1, max_nnz, p, start.data(), on, part[q]);
    }
  });
  int64_t count = 0, bases = 0;
  bool based = false, over = false;
  for (const DeltaPart& s : part) {
    if (s.odd) return {};
    count += s.count;
    bases += s.bcount;
    based |= s.based;
    over |= s.over;
  }
  const auto none = torch::empty({0}, torch::kInt64);
  const auto none32 = none.to(torch::kInt32);
  if (over || count + bases > max_nnz) return {none, none32, x.new_empty({0}), none, none32};
  for (int64_t n = 0; n < rows; ++n) p[n + 1] += p[n];
  for (int64_t b = 0; b < batch; ++b) on[b + 1] += on[b];
  auto idx = torch::empty({count}, torch::kInt32);
  auto val = x.new_empty({based ? count : 0});
  int32_t* ip = idx.data_ptr<int32_t>();
  float* vp = based ? val.data_ptr<float>() : nullptr;
  at::parallel_for(0, rows, 256, [&](int64_t r0, int64_t r1) {  // into row order
    for (int64_t n = r0; n < r1; ++n) {
      const DeltaPart& s = part[(n % batch) / per];
      const int64_t k = p[n + 1] - p[n];
      std::memcpy(ip + p[n], s.idx.get() + start[n], sizeof(int32_t) * k);
      if (based) std::memcpy(vp + p[n], s.val.get() + start[n], sizeof(float) * k);
    }
  });
  if (!based) return {ptr, idx, val, none, none32};  // every delta is a nonzero, +1
  auto bidx = torch::empty({on[batch]}, torch::kInt32);
  for (int64_t q = 0; q < parts; ++q) {
    const int64_t b0 = std::min(batch, q * per);
    std::memcpy(bidx.data_ptr<int32_t>() + on[b0], part[q].bidx.get(),
                sizeof(int32_t) * part[q].bcount);
  }
  return {ptr, idx, val, bptr, bidx};
}

}  // namespace

// x [N, I] → the lists an event product reads (Lists in native.py), five tensors:
//  * temporal deltas, for 0/1 spikes whose rows are T = steps time-major steps
//    (row n = t·B + b, as FoldTime folds them): the base of sample b is its majority
//    pattern, A_b = {i : x[t·B + b, i] = 1 for more than T/2 of its steps}
//    (bptr [B + 1], bidx ascending), and row n lists only where it differs from its
//    base (ptr [N + 1], idx ascending, val = x − a = ±1). Rate-coded MNIST fires most
//    of a digit's pixels at nearly every step: the deltas are ~1/5 of the nonzeros at
//    T = 10 (20 against 99 a row) and the bases count once per sample, not per step.
//    Samples are taken in groups of kGroup = 4, each read twice in a row (tallies,
//    then deltas) while its rows are in the cache; a group keeps its bases only
//    where bases and deltas together are at least a fifth below its nonzeros
//    (otherwise its bases are empty and its deltas are its nonzeros). When no group
//    keeps one, the lists come back as the nonzero lists below;
//  * otherwise x's nonzero entries row by row (CSR: ptr, idx, val — val empty when
//    every nonzero is 1), with bptr and bidx empty;
//  * all five empty when the nonzeros are more than max_nnz (the caller then runs
//    the dense product).
std::vector<torch::Tensor> event_rows(torch::Tensor x, int64_t steps, int64_t max_nnz) {
  check_float(x, "x");
  TORCH_CHECK(x.dim() == 2, "event_rows: expected x [N, I]");
  const int64_t rows = x.size(0), cols = x.size(1);
  const bool temporal = steps >= 2 && rows > 0 && rows % steps == 0;
  const int64_t batch = temporal ? rows / steps : rows;
  const float* xp = x.data_ptr<float>();
  auto ptr = torch::empty({rows + 1}, torch::kInt64);
  int64_t* p = ptr.data_ptr<int64_t>();
  p[0] = 0;
  const auto none = torch::empty({0}, torch::kInt64);
  const auto none32 = none.to(torch::kInt32);
  if (temporal) {
    auto deltas = temporal_deltas(x, steps, max_nnz, ptr);
    if (!deltas.empty()) return deltas;
  }
  std::atomic<bool> odd{false};
  // the nonzeros, pass 1: row counts
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    bool seen = false;
    for (int64_t n = r0; n < r1; ++n)
      p[n + 1] = scan_row<false>(xp + n * cols, cols, nullptr, &seen);
    if (seen) odd = true;
  });
  int64_t nonzeros = 0;
  for (int64_t n = 0; n < rows; ++n) nonzeros += p[n + 1];
  if (nonzeros > max_nnz) return {none, none32, x.new_empty({0}), none, none32};
  for (int64_t n = 0; n < rows; ++n) p[n + 1] += p[n];
  auto idx = room(nonzeros, torch::kInt32);
  auto val = odd ? room(nonzeros, torch::kFloat32) : x.new_empty({0});
  int32_t* ip = idx.data_ptr<int32_t>();
  float* vp = odd ? val.data_ptr<float>() : nullptr;
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    list_nonzeros(xp, cols, p, odd, r0, r1, ip, vp);
  });
  return {ptr, idx, val, none, none32};
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

float firing_cut_f32(double threshold, bool strict);  // native_lif.cpp: g(u)'s cut

// The product and the LIF neurons after it, for evaluation: spikes o [N, outs] of
// x's lists (either form) with rows t·B + b (steps = T), never storing y. Spikes
// bit-identical to event_forward(_delta) followed by native_lif.cpp's forward with
// one leak value each, f1 = f(1) and f0 = f(0), and threshold (strict: "gt").
torch::Tensor event_forward_lif(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                                torch::Tensor bptr, torch::Tensor bidx, torch::Tensor packed,
                                torch::Tensor pbias, int64_t outs, int64_t steps, double f1,
                                double f0, double threshold, bool strict) {
  check_packed(packed, pbias, outs);
  const int64_t rows = ptr.size(0) - 1, padded = packed.size(0) * kChunk;
  TORCH_CHECK(steps >= 1 && rows % steps == 0,
              "event_forward_lif: rows are not a whole number of steps");
  const int64_t batch = rows / steps, blocks = packed.size(0), ins = packed.size(1);
  Init init{pbias.data_ptr<float>(), 0, 1};
  torch::Tensor base;
  if (bptr.numel()) {
    const int64_t samples = bptr.size(0) - 1;
    TORCH_CHECK(samples == batch, "event_forward_lif: bases are not one per sample");
    base = forward_rows(view(bptr, bidx, val.new_empty({0})), samples, packed, init, padded);
    init = Init{base.data_ptr<float>(), padded, samples};
  }
  const float cut = firing_cut_f32(threshold, strict);
  auto o = torch::empty({rows, outs}, packed.options());
  const Rows x = view(ptr, idx, val);
  const float* wp = packed.data_ptr<float>();
  float* op = o.data_ptr<float>();
  at::parallel_for(0, batch, 8, [&](int64_t b0, int64_t b1) {
    std::vector<float> state((b1 - b0) * kChunk);
    for (int64_t k = 0; k < blocks; ++k) {
      const int64_t width = std::min(kChunk, outs - k * kChunk);
      const Init at{init.at + k * kChunk, init.stride, init.period};
      const float* wb = wp + k * ins * kChunk;
      if (x.val == nullptr) {
        lif_block<true>(x, wb, at, op + k * kChunk, b0, b1, batch, steps, outs, width,
                        float(f1), float(f0), cut, state.data());
      } else {
        lif_block<false>(x, wb, at, op + k * kChunk, b0, b1, batch, steps, outs, width,
                         float(f1), float(f0), cut, state.data());
      }
    }
  });
  return o;
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
