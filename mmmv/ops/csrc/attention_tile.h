// What the float32 and bfloat16 tiles of attention_cpu.cpp share: the per-thread scratch
// buffers, SIMD vectors of W floats, and the online softmax of a key block with the start and
// end of a query tile (see attention_cpu.cpp for the algorithm).
#pragma once

#include <torch/extension.h>

#include "cpu_math.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>

namespace mmmv::attention {

constexpr int64_t kKeyBlock = 256;  // keys whose scores are kept at once: (kKeyBlock, T)

// Per-thread buffers of one query tile, 64-byte aligned. `packed` holds the bf16 path's
// probabilities as (kKeyBlock / 2, T) pairs of keys.
struct Scratch {
  std::unique_ptr<float[], decltype(&std::free)> memory{nullptr, &std::free};
  float *qt, *scores, *acc, *max, *sum, *packed;  // (d, T), (kKeyBlock, T), (d, T), (T,), (T,)

  Scratch(int64_t d, int64_t lanes) {
    const int64_t sizes[] = {d * lanes, kKeyBlock * lanes, d * lanes, lanes, lanes,
                             kKeyBlock / 2 * lanes};
    int64_t total = 0;
    for (int64_t s : sizes) total += (s + 15) / 16 * 16;
    memory.reset(static_cast<float*>(std::aligned_alloc(64, total * sizeof(float))));
    TORCH_CHECK(memory, "_attention_cpu: out of memory for scratch buffers");
    float* p = memory.get();
    float** slots[] = {&qt, &scores, &acc, &max, &sum, &packed};
    for (int i = 0; i < 6; ++i) {
      *slots[i] = p;
      p += (sizes[i] + 15) / 16 * 16;
    }
  }
};

// W floats in one SIMD register (GCC vector extension; a typedef in a class template, since GCC
// drops the attribute from an alias template).
template <int W>
struct VecOf {
  typedef float type __attribute__((vector_size(W * sizeof(float))));
};
template <int W>
using Vec = typename VecOf<W>::type;

// The vector helpers are always inlined into a function of their instruction set, so the ABI of
// passing vectors by value, which GCC warns about, never applies.
#pragma GCC diagnostic ignored "-Wpsabi"

template <int W>
MMMV_INLINE Vec<W> load(const float* p) {
  return *reinterpret_cast<const Vec<W>*>(p);
}

template <int W>
MMMV_INLINE void store(float* p, Vec<W> x) {
  *reinterpret_cast<Vec<W>*>(p) = x;
}

// Online softmax over the n scores of a key block, scores[j, :] for j < n: rescales what was
// accumulated under the old running max (acc, sum) to the block's new max and turns the scores into
// exp(score - new max) in place. block_max: lane-wise max of the old max and the block's scores.
// ExpDegree: degree of the exp polynomial of the scores (7: 1 ulp; 4, 4e-5 relative, is enough
// where they are rounded to bfloat16 next).
template <int W, int NV, int ExpDegree = 7>
MMMV_INLINE void softmax_block(Scratch& s, const Vec<W>* block_max, int64_t n, int64_t d) {
  constexpr int T = W * NV;
  alignas(64) float new_max[T], rescale[T];  // written as vectors
  for (int v = 0; v < NV; ++v) store<W>(new_max + v * W, block_max[v]);
  for (int i = 0; i < T; ++i) rescale[i] = exp_f32(s.max[i] - new_max[i]);
  for (int64_t c = 0; c < d; ++c) {
    float* row = s.acc + c * T;
    for (int i = 0; i < T; ++i) row[i] *= rescale[i];
  }
  float block_sum[T] = {};
  for (int64_t jj = 0; jj < n; ++jj) {
    float* row = s.scores + jj * T;
    for (int i = 0; i < T; ++i) {
      row[i] = exp_taylor<ExpDegree>(row[i] - new_max[i]);
      block_sum[i] += row[i];
    }
  }
  for (int i = 0; i < T; ++i) {
    s.sum[i] = s.sum[i] * rescale[i] + block_sum[i];
    s.max[i] = new_max[i];
  }
}

// Zero accumulator and sum, running max -inf: the state before a tile's first key block.
template <int T>
MMMV_INLINE void start_tile(Scratch& s, int64_t d) {
  std::fill(s.acc, s.acc + d * T, 0.0f);
  std::fill(s.sum, s.sum + T, 0.0f);
  std::fill(s.max, s.max + T, -std::numeric_limits<float>::infinity());
}

// out row q0 + i = acc[:, i] / sum[i] for the nq queries of the tile, in the output's type.
template <int T, typename Out>
MMMV_INLINE void finish_tile(const Scratch& s, Out* out, int64_t out_stride, int64_t nq,
                             int64_t d) {
  for (int64_t i = 0; i < nq; ++i) {
    Out* oi = out + i * out_stride;
    const float inv = 1.0f / s.sum[i];
    for (int64_t c = 0; c < d; ++c) oi[c] = static_cast<Out>(s.acc[c * T + i] * inv);
  }
}

}  // namespace mmmv::attention
