// Bernoulli rate coding on the CPU in one pass (compiled into the native extension;
// the definition and its torch twin: snnrun/data/encoding.py). o = 1[r < k/255] for a
// uniform r drawn per element and step, decided on r's base-256 digits: the first
// digit that differs from k says it (digit < k fires). Digit d of element e (of
// count = T·N) is byte d·count + e of a counter-based stream: byte j is byte j mod 8
// (little end first) of SplitMix64's output number ⌊j/8⌋ for the call's 64-bit key.
// Every element is computed from (key, its index) alone: the same spikes for any
// thread count, and the same as the torch twin, bit for bit.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstdint>
#include <cstring>

#define NOINLINE __attribute__((noinline))

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the stream's byte order is defined little end first");

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kMix1 = 0xBF58476D1CE4E5B9ULL;
constexpr uint64_t kMix2 = 0x94D049BB133111EBULL;
constexpr int64_t kWords = 512;  // words per piece: 4 KiB of digits in L1

inline uint64_t stream_word(uint64_t key, uint64_t counter) {
  uint64_t z = key + (counter + 1) * kGolden;
  z = (z ^ (z >> 30)) * kMix1;
  z = (z ^ (z >> 27)) * kMix2;
  return z ^ (z >> 31);
}

inline uint8_t stream_byte(uint64_t key, uint64_t j) {
  return static_cast<uint8_t>(stream_word(key, j >> 3) >> (8 * (j & 7)));
}

NOINLINE void fill_words(uint64_t key, uint64_t first, int64_t n,
                         uint64_t* __restrict out) {
  for (int64_t i = 0; i < n; ++i) out[i] = stream_word(key, first + uint64_t(i));
}

// Whether a first digit equal to k leaves r < k/255 open: not for k = 0 (p = 0, never
// fires) nor k = 255 (p = 1 = 0.255 255 … in base 256: the first digit below 255
// fires, and r < 1 always). MNIST's pixels are mostly one or the other.
inline bool open_tie(uint8_t digit, uint8_t k) {
  return digit == k && uint8_t(k - 1) < 254;
}

// out = 1[r < k/255] over n elements wherever the first digit decides it (vectorised);
// returns whether any is left open (a tie to resolve).
NOINLINE bool first_digit(const uint8_t* __restrict digit, const uint8_t* __restrict k,
                          float* __restrict out, int64_t n) {
  uint8_t tie = 0;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = (digit[i] < k[i]) | (k[i] == 255) ? 1.0f : 0.0f;
    tie |= open_tie(digit[i], k[i]);
  }
  return tie != 0;
}

// The element whose first digit equals its k: the next digits until one differs.
float resolve_tie(uint64_t key, uint64_t count, uint64_t element, uint8_t level) {
  for (uint64_t depth = 1;; ++depth) {
    const uint8_t digit = stream_byte(key, depth * count + element);
    if (digit != level) return digit < level ? 1.0f : 0.0f;
  }
}

// Elements [first, first + n) whose first digits are `digit`, k cycling with period
// `width` (element e has intensity k[e mod width]).
void encode_piece(uint64_t key, uint64_t count, const uint8_t* digit, const uint8_t* k,
                  int64_t width, int64_t first, int64_t n, float* out) {
  constexpr int64_t kTieBlock = 64;  // a tie in 64 digits: p = 0.22; scanned then
  int64_t done = 0;
  while (done < n) {
    const int64_t e = first + done, col = e % width;
    const int64_t run = std::min({n - done, width - col, kTieBlock});  // k contiguous
    if (first_digit(digit + done, k + col, out + e, run)) {
      for (int64_t i = 0; i < run; ++i) {
        if (open_tie(digit[done + i], k[col + i]))
          out[e + i] = resolve_tie(key, count, uint64_t(e + i), k[col + i]);
      }
    }
    done += run;
  }
}

}  // namespace

// k [N] uint8 intensities → float32 spikes [steps · N] (step-major), for `key`.
torch::Tensor rate_encode(torch::Tensor k, int64_t steps, int64_t key) {
  TORCH_CHECK(k.device().is_cpu() && k.scalar_type() == torch::kUInt8 &&
                  k.is_contiguous() && k.dim() == 1,
              "rate_encode: expected a contiguous uint8 CPU tensor [N]");
  TORCH_CHECK(steps >= 0, "rate_encode: steps must be >= 0");
  const int64_t width = k.numel(), count = steps * width;
  auto out = torch::empty({count}, torch::kFloat32);
  if (count == 0) return out;
  const uint64_t ukey = static_cast<uint64_t>(key);
  const uint8_t* kp = k.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  const int64_t words = (count + 7) / 8;
  at::parallel_for(0, (words + kWords - 1) / kWords, 16, [&](int64_t begin, int64_t end) {
    uint64_t buffer[kWords];
    for (int64_t piece = begin; piece < end; ++piece) {
      const int64_t w0 = piece * kWords, nw = std::min(kWords, words - w0);
      fill_words(ukey, uint64_t(w0), nw, buffer);
      const int64_t first = w0 * 8, n = std::min(nw * 8, count - first);
      encode_piece(ukey, uint64_t(count), reinterpret_cast<const uint8_t*>(buffer), kp,
                   width, first, n, op);
    }
  });
  return out;
}
