// Attention for cached decoding on CPU: softmax(q k^T / sqrt(d_head) + mask) v when each
// (batch, head) has a few queries (1 in self-attention, the beam in cross-attention, see
// `DecoderLayer`) against a few dozen keys.
//
// PyTorch's CPU flash-attention kernel is built for long sequences: on these shapes it spends
// most of its time in set-up (docs/benchmarks.md has the measurements). Here
// each (batch, head) is one small loop nest: scores, a float32 softmax, the weighted sum of
// values. bf16 keys/values are widened to float32 once per head (every query reads them);
// float32 ones are read in place. Results equal SDPA's up to float rounding (tested).
//
// The loops are plain enough for the compiler to vectorise; `target_clones` compiles them for
// AVX-512, AVX2 and baseline x86-64 and picks one at load time (other CPUs: baseline only).

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define SEQ2SEQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SEQ2SEQ_CLONES
#endif

namespace {

constexpr int64_t kMaxHead = 256;

inline float to_float(float x) { return x; }
inline float to_float(at::BFloat16 x) { return bf16_bits_to_float(x.x); }

struct Head {  // one (batch, head): pointers to its first query/key/value/output row, and steps
  const void* q;
  const void* k;
  const void* v;
  void* out;
  int64_t q_step, k_step, v_step, out_step;
  const bool* mask;  // L entries, true = attend; nullptr: every key
};

// The Q queries of one head against its L keys, into Q output rows.
template <typename T>
SEQ2SEQ_CLONES void attend_head(const Head& head, int64_t Q, int64_t L, int64_t D, float scale,
                                std::vector<float>& scratch) {
  const T* k = static_cast<const T*>(head.k);
  const T* v = static_cast<const T*>(head.v);
  const float* keys;
  const float* values;
  int64_t key_step = head.k_step, value_step = head.v_step;
  if constexpr (std::is_same_v<T, float>) {
    keys = k, values = v;
  } else {  // widen once: every query reads every key and value
    float* widened = scratch.data();
    for (int64_t j = 0; j < L; ++j)
      for (int64_t d = 0; d < D; ++d) {
        widened[j * D + d] = to_float(k[j * head.k_step + d]);
        widened[(L + j) * D + d] = to_float(v[j * head.v_step + d]);
      }
    keys = widened, values = widened + L * D, key_step = value_step = D;
  }
  float* weights = scratch.data() + 2 * L * D;
  const float minus_infinity = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < Q; ++i) {
    const T* qi = static_cast<const T*>(head.q) + i * head.q_step;
    float query[kMaxHead], sum[kMaxHead];
    for (int64_t d = 0; d < D; ++d) query[d] = to_float(qi[d]) * scale;
    float best = minus_infinity;
    for (int64_t j = 0; j < L; ++j) {
      const float* key = keys + j * key_step;
      float lanes[16] = {0};  // 16 partial sums: vectorisable without reassociation
      int64_t d = 0;
      for (; d + 16 <= D; d += 16)
        for (int l = 0; l < 16; ++l) lanes[l] += query[d + l] * key[d + l];
      float score = 0;
      for (int l = 0; l < 16; ++l) score += lanes[l];
      for (; d < D; ++d) score += query[d] * key[d];
      weights[j] = (head.mask && !head.mask[j]) ? minus_infinity : score;
      best = std::max(best, weights[j]);
    }
    if (best == minus_infinity) best = 0.0f;  // every key masked: weights 0, output 0
    float total = 0;
    for (int64_t j = 0; j < L; ++j) total += (weights[j] = std::exp(weights[j] - best));
    const float norm = total > 0.0f ? 1.0f / total : 0.0f;
    for (int64_t d = 0; d < D; ++d) sum[d] = 0.0f;
    for (int64_t j = 0; j < L; ++j) {
      const float w = weights[j] * norm;
      const float* value = values + j * value_step;
      for (int64_t d = 0; d < D; ++d) sum[d] += w * value[d];
    }
    T* o = static_cast<T*>(head.out) + i * head.out_step;
    for (int64_t d = 0; d < D; ++d) o[d] = static_cast<T>(sum[d]);
  }
}

template <typename T>
void attend_all(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                const bool* mask, int64_t mask_step, torch::Tensor& out) {
  const int64_t B = q.size(0), H = q.size(1), Q = q.size(2), D = q.size(3), L = k.size(2);
  const float scale = 1.0f / std::sqrt(float(D));
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  T* op = out.data_ptr<T>();
  at::parallel_for(0, B * H, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(2 * L * D + L);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      Head head{qp + b * q.stride(0) + h * q.stride(1),
                kp + b * k.stride(0) + h * k.stride(1),
                vp + b * v.stride(0) + h * v.stride(1),
                op + b * Q * H * D + h * D,  // (B, Q, H * D): heads side by side
                q.stride(2), k.stride(2), v.stride(2), H * D,
                mask ? mask + b * mask_step : nullptr};
      attend_head<T>(head, Q, L, D, scale, scratch);
    }
  });
}

}  // namespace

// q (B, H, Q, D), k and v (B, H, L, D), each with a contiguous last dimension, all float32 or
// all bfloat16; mask: None or bool (B or 1, 1, 1, L), true = attend. Returns (B, Q, H * D).
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                     const c10::optional<torch::Tensor>& mask) {
  TORCH_CHECK(q.device().is_cpu() && q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
              "attend: 4-D CPU tensors");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1,
              "attend: the last dimension must be contiguous");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && k.scalar_type() == v.scalar_type(),
              "attend: q, k and v of one dtype");
  TORCH_CHECK(k.device().is_cpu() && v.device().is_cpu(), "attend: CPU tensors");
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == q.size(0) && k.size(1) == q.size(1) &&
                  k.size(3) == q.size(3),
              "attend: keys and values (B, H, L, D) for queries (B, H, Q, D)");
  TORCH_CHECK(q.size(3) <= kMaxHead && k.size(2) >= 1, "attend: d_head <= 256, >= 1 key");
  auto out = torch::empty({q.size(0), q.size(2), q.size(1) * q.size(3)}, q.options());
  const bool* mask_data = nullptr;
  int64_t mask_step = 0;
  torch::Tensor dense_mask;
  if (mask.has_value()) {
    dense_mask = mask->contiguous();
    TORCH_CHECK(dense_mask.scalar_type() == torch::kBool && dense_mask.dim() == 4 &&
                    dense_mask.size(1) == 1 && dense_mask.size(2) == 1 &&
                    dense_mask.size(3) == k.size(2) &&
                    (dense_mask.size(0) == 1 || dense_mask.size(0) == q.size(0)),
                "attend: mask of shape (B or 1, 1, 1, L)");
    mask_data = dense_mask.data_ptr<bool>();
    mask_step = dense_mask.size(0) == 1 ? 0 : k.size(2);
  }
  if (q.scalar_type() == torch::kBFloat16) {
    attend_all<at::BFloat16>(q, k, v, mask_data, mask_step, out);
  } else {
    TORCH_CHECK(q.scalar_type() == torch::kFloat32, "attend: float32 or bfloat16");
    attend_all<float>(q, k, v, mask_data, mask_step, out);
  }
  return out;
}
