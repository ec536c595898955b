// The CPU kernels of `seq2seq/fast/kernels.py`, bound to Python in bindings.cpp.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <cstring>
#include <vector>

// A bfloat16's bits as the float32 it is (bfloat16 is the top half of a float32).
inline float bf16_bits_to_float(uint16_t bits) {
  uint32_t widened = uint32_t(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof value);
  return value;
}

// (values, indices) of the k largest values of each row of a (rows, n) tensor.
std::vector<torch::Tensor> row_topk(const torch::Tensor& x, int64_t k);

// softmax(q k^T / sqrt(d_head) + mask) v for the few queries of cached decoding.
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                     const c10::optional<torch::Tensor>& mask);
