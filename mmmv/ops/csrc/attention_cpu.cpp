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
//
// bfloat16 (q, k, v and out bf16, CPUs with AVX512-BF16 only): the same tiles, with the products
// done by vdpbf16ps, which multiplies pairs of bf16 and adds both products to a float32 lane, so
// each instruction does twice the work of an FMA. Queries are packed as (d / 2, T) pairs of
// channels, keys broadcast a pair of channels; for P V the probabilities are rounded to bf16 and
// packed as pairs of keys per lane, values broadcast a pair of keys of one channel (values are
// repacked once per head as (ceil(lk / 2), d) key pairs). Scores, the softmax and the
// accumulators stay float32; the head width must be even.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include "attention_tile.h"
#include "cpu_math.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#endif

namespace {

using namespace mmmv::attention;

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
  start_tile<T>(s, d);
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
    softmax_block<W, NV>(s, block_max, n, d);
    const float* value = h.v + j0 * d;
    int64_t c = 0;
    for (; c + R <= d; c += R) {
      accumulate_rows<W, NV, R>(s.scores, value + c, d, n, s.acc + c * T);
    }
    for (; c < d; ++c) accumulate_rows<W, NV, 1>(s.scores, value + c, d, n, s.acc + c * T);
  }
  finish_tile<T>(s, h.out + q0 * h.out_stride, h.out_stride, nq, d);
}

// Instruction-set variants of one tile: vector width W floats, NV vectors of queries per tile, R
// key rows or value channels per register block (NV * R accumulators and NV loaded vectors held
// in registers). Each is a real function with its own target, so that the inlined kernels are
// compiled for it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma,prefer-vector-width=512")))
void tile_avx512(const Head& h, int64_t q0, Scratch& s) { attend_tile<16, 4, 4>(h, q0, s); }

__attribute__((target("avx2,fma"))) void tile_avx2(const Head& h, int64_t q0, Scratch& s) {
  attend_tile<8, 3, 4>(h, q0, s);
}
#endif

void tile_baseline(const Head& h, int64_t q0, Scratch& s) { attend_tile<4, 2, 4>(h, q0, s); }

// Pointers and strides of one (batch, head) problem in bfloat16 (raw bits).
struct HeadBf16 {
  const uint16_t* q;   // (lq, d), row stride q_stride
  const uint32_t* k;   // (lk, d / 2) pairs of channels, contiguous
  const uint32_t* vp;  // (ceil(lk / 2), d): key pairs of one channel, key 2m in the low half
  at::BFloat16* out;   // (lq, d), row stride out_stride
  int64_t q_stride, out_stride;
  int64_t lq, lk, d;
  float scale;
};

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MMMV_HAS_BF16_KERNEL 1
// Helpers that use the AVX512-BF16 intrinsics carry the target themselves (an always-inline
// function inherits no target from its caller before it is inlined).
#define MMMV_BF16 \
  __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx512bf16,fma," \
                        "prefer-vector-width=512")))

// Scores of R consecutive keys against the tile (16 * NV queries), scaled:
// scores[r, :] = scale * sum_p key_r[pair p] . qt2[p, :]; lane-wise max folded into `running`.
template <int NV, int R>
MMMV_BF16 MMMV_INLINE void score_rows_bf16(const uint32_t* qt2, const uint32_t* key,
                                           int64_t pairs, float scale, float* scores,
                                           Vec<16>* running) {
  constexpr int T = 16 * NV;
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh q[NV];
    for (int v = 0; v < NV; ++v) q[v] = (__m512bh)_mm512_load_si512(qt2 + p * T + v * 16);
    for (int r = 0; r < R; ++r) {
      const __m512bh kp = (__m512bh)_mm512_set1_epi32(static_cast<int>(key[r * pairs + p]));
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], q[v], kp);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) {
      const Vec<16> x = (Vec<16>)acc[r][v] * scale;
      store<16>(scores + r * T + v * 16, x);
      running[v] = x > running[v] ? x : running[v];
    }
  }
}

// packed[m, :] = the tile's probabilities of keys 2m and 2m + 1 rounded to bf16, one pair per
// lane (key 2m in the low half; a missing key 2m + 1 past n counts 0), for m < ceil(n / 2).
template <int NV>
MMMV_BF16 MMMV_INLINE void pack_probabilities(const float* p, int64_t n, uint32_t* packed) {
  constexpr int T = 16 * NV;
  // cvtne2ps puts key 2m's 16 values in the low words and key 2m + 1's in the high ones;
  // word 2i of the result takes word i, word 2i + 1 word 16 + i.
  alignas(64) static const uint16_t kInterleave[32] = {
      0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i interleave = _mm512_load_si512(kInterleave);
  for (int64_t m = 0; 2 * m < n; ++m) {
    const float* even = p + 2 * m * T;
    for (int v = 0; v < NV; ++v) {
      const __m512 lo = _mm512_load_ps(even + v * 16);
      const __m512 hi = 2 * m + 1 < n ? _mm512_load_ps(even + T + v * 16) : _mm512_setzero_ps();
      const __m512i words = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
      _mm512_store_si512(packed + m * T + v * 16, _mm512_permutexvar_epi16(interleave, words));
    }
  }
}

// acc[c0 + r, :] += sum_m value[m, c0 + r] . packed[m, :] for r < R over the key pairs of a block.
template <int NV, int R>
MMMV_BF16 MMMV_INLINE void accumulate_rows_bf16(const uint32_t* packed, const uint32_t* value,
                                                int64_t d, int64_t pairs, float* acc_rows) {
  constexpr int T = 16 * NV;
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_load_ps(acc_rows + r * T + v * 16);
  }
  for (int64_t m = 0; m < pairs; ++m) {
    __m512bh pm[NV];
    for (int v = 0; v < NV; ++v) pm[v] = (__m512bh)_mm512_load_si512(packed + m * T + v * 16);
    const uint32_t* vm = value + m * d;
    for (int r = 0; r < R; ++r) {
      const __m512bh vr = (__m512bh)_mm512_set1_epi32(static_cast<int>(vm[r]));
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], pm[v], vr);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) _mm512_store_ps(acc_rows + r * T + v * 16, acc[r][v]);
  }
}

// One bf16 tile of up to T = 16 * NV queries starting at query q0, all keys.
template <int NV, int R>
MMMV_BF16 MMMV_INLINE void attend_tile_bf16(const HeadBf16& h, int64_t q0, Scratch& s) {
  constexpr int T = 16 * NV;
  const int64_t nq = std::min<int64_t>(T, h.lq - q0), d = h.d, pairs = d / 2;
  // Queries packed as (pairs, T): lane i holds channels 2p and 2p + 1 of query q0 + i, unscaled
  // (the scale is applied to the float32 scores).
  uint32_t* qt2 = reinterpret_cast<uint32_t*>(s.qt);
  std::fill(qt2, qt2 + pairs * T, 0u);
  for (int64_t i = 0; i < nq; ++i) {
    const uint16_t* qi = h.q + (q0 + i) * h.q_stride;
    for (int64_t p = 0; p < pairs; ++p) std::memcpy(qt2 + p * T + i, qi + 2 * p, 4);
  }
  start_tile<T>(s, d);
  uint32_t* packed = reinterpret_cast<uint32_t*>(s.packed);
  for (int64_t j0 = 0; j0 < h.lk; j0 += kKeyBlock) {
    const int64_t n = std::min(kKeyBlock, h.lk - j0);
    Vec<16> block_max[NV];
    for (int v = 0; v < NV; ++v) block_max[v] = load<16>(s.max + v * 16);
    const uint32_t* key = h.k + j0 * pairs;
    int64_t j = 0;
    for (; j + R <= n; j += R) {
      score_rows_bf16<NV, R>(qt2, key + j * pairs, pairs, h.scale, s.scores + j * T, block_max);
    }
    for (; j < n; ++j) {
      score_rows_bf16<NV, 1>(qt2, key + j * pairs, pairs, h.scale, s.scores + j * T, block_max);
    }
    softmax_block<16, NV, 4>(s, block_max, n, d);  // probabilities are rounded to bf16
    pack_probabilities<NV>(s.scores, n, packed);
    const uint32_t* value = h.vp + j0 / 2 * d;  // kKeyBlock is even
    const int64_t key_pairs = (n + 1) / 2;
    int64_t c = 0;
    for (; c + R <= d; c += R) {
      accumulate_rows_bf16<NV, R>(packed, value + c, d, key_pairs, s.acc + c * T);
    }
    for (; c < d; ++c) {
      accumulate_rows_bf16<NV, 1>(packed, value + c, d, key_pairs, s.acc + c * T);
    }
  }
  finish_tile<T>(s, h.out + q0 * h.out_stride, h.out_stride, nq, d);
}

MMMV_BF16 void tile_avx512_bf16(const HeadBf16& h, int64_t q0, Scratch& s) {
  attend_tile_bf16<4, 4>(h, q0, s);
}
#endif

// Every (batch, head, query tile) of the problem, tiles of `lanes` queries.
template <typename H>
void attend_all(const std::vector<H>& heads, void (*tile)(const H&, int64_t, Scratch&),
                int64_t lanes) {
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

// Instruction sets this CPU runs for float32, widest first.
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

// Instruction sets this CPU runs for bfloat16: "avx512_bf16" or none.
std::vector<std::string> supported_bf16_isas() {
  std::vector<std::string> isas;
#ifdef MMMV_HAS_BF16_KERNEL
  const std::vector<std::string> fp32 = supported_isas();
  if (fp32.front() == "avx512" && __builtin_cpu_supports("avx512bf16")) {
    isas.push_back("avx512_bf16");
  }
#endif
  return isas;
}

// The bf16 problem: values repacked as key pairs per channel, keys as contiguous channel pairs.
at::Tensor attention_forward_bf16(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  double scale) {
#ifdef MMMV_HAS_BF16_KERNEL
  const int64_t b = q.size(0), nh = q.size(1), lq = q.size(2), d = q.size(3), lk = k.size(2);
  const int64_t key_pairs = (lk + 1) / 2;
  const at::Tensor kc = k.contiguous();
  at::Tensor vp = at::empty({b, nh, key_pairs, d}, q.options().dtype(at::kInt));
  at::Tensor out = at::empty({b, lq, nh, d}, q.options());
  if (lq == 0 || b == 0 || nh == 0) return out;
  const auto* vbits = reinterpret_cast<const uint16_t*>(v.data_ptr<at::BFloat16>());
  auto* vpairs = reinterpret_cast<uint32_t*>(vp.data_ptr<int32_t>());
  at::parallel_for(0, b * nh, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const uint16_t* src = vbits + t / nh * v.stride(0) + t % nh * v.stride(1);
      uint32_t* dst = vpairs + t * key_pairs * d;
      for (int64_t m = 0; m < key_pairs; ++m) {
        const uint16_t* even = src + 2 * m * v.stride(2);
        const bool odd_exists = 2 * m + 1 < lk;
        for (int64_t c = 0; c < d; ++c) {
          const uint32_t hi = odd_exists ? even[v.stride(2) + c * v.stride(3)] : 0u;
          dst[m * d + c] = even[c * v.stride(3)] | hi << 16;
        }
      }
    }
  });
  const auto* qbits = reinterpret_cast<const uint16_t*>(q.data_ptr<at::BFloat16>());
  const auto* kpairs = reinterpret_cast<const uint32_t*>(kc.data_ptr<at::BFloat16>());
  std::vector<HeadBf16> heads;
  heads.reserve(b * nh);
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t hi = 0; hi < nh; ++hi) {
      heads.push_back(HeadBf16{qbits + bi * q.stride(0) + hi * q.stride(1),
                               kpairs + (bi * nh + hi) * lk * d / 2,
                               vpairs + (bi * nh + hi) * key_pairs * d,
                               out.data_ptr<at::BFloat16>() + (bi * lq * nh + hi) * d,
                               q.stride(2), nh * d, lq, lk, d, static_cast<float>(scale)});
    }
  }
  attend_all(heads, tile_avx512_bf16, 64);
  return out;
#else
  TORCH_CHECK(false, "_attention_cpu: built without the bfloat16 kernel");
#endif
}

// out (b, lq, h, d) = attention(q, k, v) with the given softmax scale, in q's dtype; isa: "auto"
// or one of supported_isas() (float32) / supported_bf16_isas() (bfloat16).
at::Tensor attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             double scale, const std::string& isa) {
  const bool bf16 = q.scalar_type() == at::kBFloat16;
  for (const at::Tensor* t : {&q, &k, &v}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == (bf16 ? at::kBFloat16 : at::kFloat),
                "_attention_cpu: q, k, v must be float32 CPU tensors (or all bfloat16)");
    TORCH_CHECK(t->dim() == 4,
                "_attention_cpu: q, k, v must be (batch, heads, length, head_dim)");
  }
  TORCH_CHECK(q.stride(3) == 1, "_attention_cpu: q must have unit stride along head_dim");
  const int64_t b = q.size(0), nh = q.size(1), lq = q.size(2), d = q.size(3), lk = k.size(2);
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == b && k.size(1) == nh && k.size(3) == d,
              "_attention_cpu: k and v must be (batch, heads, lk, head_dim) matching q");
  TORCH_CHECK(lk > 0 && d > 0, "_attention_cpu: need at least one key and one channel");
  const std::vector<std::string> isas = bf16 ? supported_bf16_isas() : supported_isas();
  TORCH_CHECK(!isas.empty(), "_attention_cpu: bfloat16 needs a CPU with AVX512-BF16");
  const std::string chosen = isa == "auto" ? isas.front() : isa;
  TORCH_CHECK(std::find(isas.begin(), isas.end(), chosen) != isas.end(), "_attention_cpu: isa '",
              isa, "' is not run by this CPU for ", bf16 ? "bfloat16" : "float32",
              "; choose 'auto' or one of ", c10::Join(", ", isas));
  if (bf16) {
    TORCH_CHECK(d % 2 == 0, "_attention_cpu: bfloat16 needs an even head_dim, got ", d);
    return attention_forward_bf16(q, k, v, scale);
  }
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
  m.doc() = "Multi-head attention forward, CPU, float32 or bfloat16, queries along SIMD lanes";
  m.def("forward", &attention_forward, "out (b, lq, h, d) = attention(q, k, v, scale, isa)");
  m.def("supported_isas", &supported_isas, "float32 instruction sets this CPU runs, widest first");
  m.def("supported_bf16_isas", &supported_bf16_isas,
        "bfloat16 instruction sets this CPU runs ('avx512_bf16' or none)");
}
