// The k largest values of each row of a (rows, n) float32 or bfloat16 CPU tensor, with their
// indices: what `torch.topk(x, k, dim=1)` returns, in one pass over each row.
//
// Beam search asks for the best 2 x beam of 8,000+ log-probabilities per row at every step.
// PyTorch's CPU top-k copies each row into (value, index) pairs before selecting; here each row
// is scanned once, 16 values per AVX-512 comparison against the current k-th best, and the rare
// value above it is inserted into a sorted list of k. Ties go to the lower index (torch leaves
// their order unspecified); NaN counts as the largest value, as in torch.topk.
//
// Built on first use by `seq2seq/fast/kernels.py` (torch.utils.cpp_extension); without a
// compiler the toolkit falls back to torch.topk.

#include <ATen/Parallel.h>
#include "kernels.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SEQ2SEQ_AVX512 1
#endif

namespace {

// The best k (value, index) pairs of a row so far, sorted best first, written straight into
// the row of the output tensors.
struct Best {
  int64_t k;
  float* values;
  int64_t* indices;
  int64_t filled = 0;

  bool full() const { return filled == k; }
  float worst() const { return values[k - 1]; }  // valid once full()

  // torch.topk's order: NaN above every number; strict, so an equal value stays in front
  static bool above(float a, float b) { return (std::isnan(a) && !std::isnan(b)) || a > b; }

  void insert(float value, int64_t index) {
    int64_t at = full() ? k - 1 : filled++;
    while (at > 0 && above(value, values[at - 1])) {
      values[at] = values[at - 1];
      indices[at] = indices[at - 1];
      --at;
    }
    values[at] = value;
    indices[at] = index;
  }

  void offer(float value, int64_t index) {
    if (!full() || above(value, worst())) insert(value, index);
  }
};

template <typename T>
float load(const T* row, int64_t i) {
  if constexpr (std::is_same_v<T, uint16_t>) return bf16_bits_to_float(row[i]);
  else return row[i];
}

template <typename T>
void scan_plain(const T* row, int64_t from, int64_t n, Best& best) {
  for (int64_t i = from; i < n; ++i) best.offer(load(row, i), i);
}

#ifdef SEQ2SEQ_AVX512
// 16 values at a time: one comparison against the k-th best finds the (rare) values above it.
template <typename T>
__attribute__((target("avx512f"))) int64_t scan_avx512(const T* row, int64_t from, int64_t n,
                                                       Best& best) {
  int64_t i = from;
  for (; i + 16 <= n; i += 16) {
    __m512 block;
    if constexpr (std::is_same_v<T, uint16_t>) {
      __m256i half = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i));
      block = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
    } else {
      block = _mm512_loadu_ps(row + i);
    }
    // "not <=": above the k-th best, or NaN on either side (then `offer` decides)
    __mmask16 candidates = _mm512_cmp_ps_mask(block, _mm512_set1_ps(best.worst()), _CMP_NLE_UQ);
    while (candidates) {
      int lane = __builtin_ctz(candidates);
      candidates &= candidates - 1;
      best.offer(load(row, i + lane), i + lane);  // the k-th best may have risen meanwhile
    }
  }
  return i;
}

bool has_avx512() { return __builtin_cpu_supports("avx512f"); }
#endif

template <typename T>
void row_top(const T* row, int64_t n, Best& best) {
  int64_t i = 0;
  for (; i < n && !best.full(); ++i) best.insert(load(row, i), i);
#ifdef SEQ2SEQ_AVX512
  static const bool avx512 = has_avx512();
  if (avx512) i = scan_avx512(row, i, n, best);
#endif
  scan_plain(row, i, n, best);
}

template <typename T>
void all_rows(const T* data, int64_t rows, int64_t n, int64_t k, float* values,
              int64_t* indices) {
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      Best best{k, values + r * k, indices + r * k};
      row_top(data + r * n, n, best);
    }
  });
}

}  // namespace

// (values float32, indices int64), each (rows, k), values sorted descending.
std::vector<torch::Tensor> row_topk(const torch::Tensor& x, int64_t k) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.is_contiguous(),
              "row_topk: a contiguous 2-D CPU tensor");
  TORCH_CHECK(k >= 1 && k <= x.size(1), "row_topk: k must be in 1..", x.size(1));
  int64_t rows = x.size(0), n = x.size(1);
  auto values = torch::empty({rows, k}, x.options().dtype(torch::kFloat32));
  auto indices = torch::empty({rows, k}, x.options().dtype(torch::kInt64));
  float* v = values.data_ptr<float>();
  int64_t* i = indices.data_ptr<int64_t>();
  if (x.scalar_type() == torch::kBFloat16) {
    all_rows(reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>()), rows, n, k, v, i);
  } else {
    TORCH_CHECK(x.scalar_type() == torch::kFloat32, "row_topk: float32 or bfloat16");
    all_rows(x.data_ptr<float>(), rows, n, k, v, i);
  }
  return {values, indices};
}
