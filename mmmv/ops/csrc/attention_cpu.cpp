// Multi-head self-attention forward on CPU, float32, for narrow heads (inference only).
//
//   out[b, i, h, :] = sum_j softmax_j(scale * q[b, h, i, :] . k[b, h, j, :]) v[b, h, j, :]
//
// q: (b, h, lq, d) with unit stride along d; k, v: (b, h, lk, d), any strides; out: (b, lq, h, d)
// contiguous, i.e. already the (b, lq, h * d) layout of the output projection's input.
//
// Queries go along the SIMD lanes. A tile of T queries is packed transposed, (d, T), so
// that the scores of one key against the whole tile are a few vectors computed by broadcasting the
// key's d values: no horizontal reductions anywhere, the softmax's running max and sum are
// lane-wise, and P V is an outer-product update of the (d, T) accumulator by broadcast value
// entries. Keys are consumed in blocks of kKeyBlock with the usual online softmax (running max,
// rescaled sum and accumulator). Narrow heads (d = 40 in MambaVision-T) keep GEMM-based kernels
// from their best rate; here every multiply-add is a full-vector FMA whatever d is.
//
// Work items (batch, head, query tile) are split over threads with at::parallel_for. The kernel is
// compiled for AVX-512, AVX2 and baseline x86-64 (or the baseline alone elsewhere) and picks the
// widest one the CPU runs, or the one asked for.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include "cpu_math.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace {

using mmmv::exp_f32;

constexpr int64_t kKeyBlock = 256;  // keys whose scores are kept at once: (kKeyBlock, T)

// Pointers and strides of one (batch, head) problem.
struct Head {
  const float* q;  // (lq, d), row stride q_stride
  const float* k;  // (lk, d), contiguous
  const float* v;  // (lk, d), contiguous
  float* out;      // (lq, d), row stride out_stride
  int64_t q_stride, out_stride;
  int64_t lq, lk, d;
  float scale;
};

// Per-thread buffers of one query tile, 64-byte aligned.
struct Scratch {
  std::unique_ptr<float[], decltype(&std::free)> memory{nullptr, &std::free};
  float *qt, *scores, *acc, *max, *sum;  // (d, T), (kKeyBlock, T), (d, T), (T,), (T,)

  Scratch(int64_t d, int64_t lanes) {
    const int64_t sizes[] = {d * lanes, kKeyBlock * lanes, d * lanes, lanes, lanes};
    int64_t total = 0;
    for (int64_t s : sizes) total += (s + 15) / 16 * 16;
    memory.reset(static_cast<float*>(std::aligned_alloc(64, total * sizeof(float))));
    TORCH_CHECK(memory, "_attention_cpu: out of memory for scratch buffers");
    float* p = memory.get();
    float** slots[] = {&qt, &scores, &acc, &max, &sum};
    for (int i = 0; i < 5; ++i) {
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

// Scores of R consecutive keys (rows of d floats) against the tile, scaled:
// scores[r, :] = sum_c key_r[c] * qt[c, :]; their lane-wise max is folded into `running`.
template <int W, int NV, int R>
MMMV_INLINE void score_rows(const float* qt, const float* key, int64_t d, float* scores,
                            Vec<W>* running) {
  constexpr int T = W * NV;
  Vec<W> acc[R][NV] = {};
  for (int64_t c = 0; c < d; ++c) {
    Vec<W> q[NV];
    for (int v = 0; v < NV; ++v) q[v] = load<W>(qt + c * T + v * W);
    for (int r = 0; r < R; ++r) {
      const float kc = key[r * d + c];
      for (int v = 0; v < NV; ++v) acc[r][v] += kc * q[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) {
      store<W>(scores + r * T + v * W, acc[r][v]);
      running[v] = acc[r][v] > running[v] ? acc[r][v] : running[v];
    }
  }
}

// acc[c0 + r, :] += sum_j value_j[c0 + r] * p[j, :] for r < R over the n keys of a block.
template <int W, int NV, int R>
MMMV_INLINE void accumulate_rows(const float* p, const float* value, int64_t value_stride,
                                 int64_t n, float* acc_rows) {
  constexpr int T = W * NV;
  Vec<W> acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = load<W>(acc_rows + r * T + v * W);
  }
  for (int64_t j = 0; j < n; ++j) {
    Vec<W> pj[NV];
    for (int v = 0; v < NV; ++v) pj[v] = load<W>(p + j * T + v * W);
    const float* vj = value + j * value_stride;
    for (int r = 0; r < R; ++r) {
      for (int v = 0; v < NV; ++v) acc[r][v] += vj[r] * pj[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) store<W>(acc_rows + r * T + v * W, acc[r][v]);
  }
}

// One tile of up to T = W * NV queries starting at query q0, all keys.
template <int W, int NV, int R>
MMMV_INLINE void attend_tile(const Head& h, int64_t q0, Scratch& s) {
  constexpr int T = W * NV;
  const int64_t nq = std::min<int64_t>(T, h.lq - q0), d = h.d;
  // Pack the scaled queries transposed; lanes past the last query stay 0 (their rows are not
  // stored).
  std::fill(s.qt, s.qt + d * T, 0.0f);
  for (int64_t i = 0; i < nq; ++i) {
    const float* qi = h.q + (q0 + i) * h.q_stride;
    for (int64_t c = 0; c < d; ++c) s.qt[c * T + i] = qi[c] * h.scale;
  }
  std::fill(s.acc, s.acc + d * T, 0.0f);
  std::fill(s.sum, s.sum + T, 0.0f);
  std::fill(s.max, s.max + T, -std::numeric_limits<float>::infinity());
  for (int64_t j0 = 0; j0 < h.lk; j0 += kKeyBlock) {
    const int64_t n = std::min(kKeyBlock, h.lk - j0);
    Vec<W> block_max[NV];
    for (int v = 0; v < NV; ++v) block_max[v] = load<W>(s.max + v * W);  // running max so far
    const float* key = h.k + j0 * d;
    int64_t j = 0;
    for (; j + R <= n; j += R) {
      score_rows<W, NV, R>(s.qt, key + j * d, d, s.scores + j * T, block_max);
    }
    for (; j < n; ++j) {
      score_rows<W, NV, 1>(s.qt, key + j * d, d, s.scores + j * T, block_max);
    }
    // Online softmax: rescale what was accumulated under the old max, then exponentiate.
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
        row[i] = exp_f32(row[i] - new_max[i]);
        block_sum[i] += row[i];
      }
    }
    for (int i = 0; i < T; ++i) {
      s.sum[i] = s.sum[i] * rescale[i] + block_sum[i];
      s.max[i] = new_max[i];
    }
    const float* value = h.v + j0 * d;
    int64_t c = 0;
    for (; c + R <= d; c += R) {
      accumulate_rows<W, NV, R>(s.scores, value + c, d, n, s.acc + c * T);
    }
    for (; c < d; ++c) accumulate_rows<W, NV, 1>(s.scores, value + c, d, n, s.acc + c * T);
  }
  for (int64_t i = 0; i < nq; ++i) {
    float* oi = h.out + (q0 + i) * h.out_stride;
    const float inv = 1.0f / s.sum[i];
    for (int64_t c = 0; c < d; ++c) oi[c] = s.acc[c * T + i] * inv;
  }
}

// Instruction-set variants of one tile: vector width W floats, NV vectors of queries per tile, R
// key rows or value channels per register block (NV * R accumulators and NV loaded vectors held
// in registers). Each is a real function with its own target, so that the inlined kernels are
// compiled for it.
using TileFn = void (*)(const Head&, int64_t, Scratch&);

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma,prefer-vector-width=512")))
void tile_avx512(const Head& h, int64_t q0, Scratch& s) { attend_tile<16, 4, 4>(h, q0, s); }

__attribute__((target("avx2,fma"))) void tile_avx2(const Head& h, int64_t q0, Scratch& s) {
  attend_tile<8, 3, 4>(h, q0, s);
}
#endif

void tile_baseline(const Head& h, int64_t q0, Scratch& s) { attend_tile<4, 2, 4>(h, q0, s); }

// Every (batch, head, query tile) of the problem, tiles of `lanes` queries.
void attend_all(const std::vector<Head>& heads, TileFn tile, int64_t lanes) {
  const int64_t lq = heads.front().lq, d = heads.front().d;
  const int64_t tiles = (lq + lanes - 1) / lanes;
  at::parallel_for(0, static_cast<int64_t>(heads.size()) * tiles, 1,
                   [&](int64_t begin, int64_t end) {
                     Scratch scratch(d, lanes);
                     for (int64_t t = begin; t < end; ++t) {
                       tile(heads[t / tiles], (t % tiles) * lanes, scratch);
                     }
                   });
}

// Instruction sets this CPU runs, widest first.
std::vector<std::string> supported_isas() {
  std::vector<std::string> isas;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw")) {
    isas.push_back("avx512");
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isas.push_back("avx2");
#endif
  isas.push_back("baseline");
  return isas;
}

// out (b, lq, h, d) = attention(q, k, v) with the given softmax scale; isa: "auto" or one of
// supported_isas().
at::Tensor attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             double scale, const std::string& isa) {
  for (const at::Tensor* t : {&q, &k, &v}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat,
                "_attention_cpu: q, k, v must be float32 CPU tensors");
    TORCH_CHECK(t->dim() == 4,
                "_attention_cpu: q, k, v must be (batch, heads, length, head_dim)");
  }
  TORCH_CHECK(q.stride(3) == 1, "_attention_cpu: q must have unit stride along head_dim");
  const int64_t b = q.size(0), nh = q.size(1), lq = q.size(2), d = q.size(3), lk = k.size(2);
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == b && k.size(1) == nh && k.size(3) == d,
              "_attention_cpu: k and v must be (batch, heads, lk, head_dim) matching q");
  TORCH_CHECK(lk > 0 && d > 0, "_attention_cpu: need at least one key and one channel");
  const std::vector<std::string> isas = supported_isas();
  const std::string chosen = isa == "auto" ? isas.front() : isa;
  TORCH_CHECK(std::find(isas.begin(), isas.end(), chosen) != isas.end(), "_attention_cpu: isa '",
              isa, "' is not run by this CPU; choose 'auto' or one of ", c10::Join(", ", isas));
  // Keys and values are read once per query tile: one contiguous (lk, d) block per head, not rows
  // scattered over the fused qkv projection (at 12,544 tokens those strided rows cost a third of
  // the speed).
  const at::Tensor kc = k.contiguous(), vc = v.contiguous();
  at::Tensor out = at::empty({b, lq, nh, d}, q.options());
  if (lq == 0 || b == 0 || nh == 0) return out;
  std::vector<Head> heads;
  heads.reserve(b * nh);
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t hi = 0; hi < nh; ++hi) {
      heads.push_back(Head{
          q.data_ptr<float>() + bi * q.stride(0) + hi * q.stride(1),
          kc.data_ptr<float>() + (bi * nh + hi) * lk * d,
          vc.data_ptr<float>() + (bi * nh + hi) * lk * d,
          out.data_ptr<float>() + (bi * lq * nh + hi) * d, q.stride(2),
          nh * d, lq, lk, d, static_cast<float>(scale)});
    }
  }
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  if (chosen == "avx512") return attend_all(heads, tile_avx512, 64), out;
  if (chosen == "avx2") return attend_all(heads, tile_avx2, 24), out;
#endif
  attend_all(heads, tile_baseline, 8);
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Multi-head attention forward, CPU, float32, queries along SIMD lanes";
  m.def("forward", &attention_forward, "out (b, lq, h, d) = attention(q, k, v, scale, isa)");
  m.def("supported_isas", &supported_isas, "instruction sets this CPU runs, widest first");
}
