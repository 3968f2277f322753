// Helpers shared by mmmv's CPU kernels: instruction-set cloning and vectorisable exps.
#pragma once

#include <bit>
#include <cstdint>
#include <limits>

// Kernels marked MMMV_TARGET_CLONES get an AVX2/FMA clone next to the baseline x86-64 code,
// picked at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MMMV_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MMMV_TARGET_CLONES
#endif
// Helpers inlined into each clone, so that they are compiled for its instruction set.
#define MMMV_INLINE __attribute__((always_inline)) inline

namespace mmmv {

// exp(x) in float32 with a Taylor polynomial of degree `Degree` (1..7), branch-free so that loops
// over arrays vectorise (the selects need -fno-trapping-math to be if-converted):
// x = k*ln2 + r with |r| <= ln2/2, exp(r) by its Taylor polynomial, 2^k from the bits.
// Relative error about r^(Degree+1) / (Degree+1)!: 1 ulp for 7, 4e-5 for 4.
template <int Degree>
MMMV_INLINE float exp_taylor(float x) {
  static_assert(Degree >= 1 && Degree <= 7, "exp_taylor: degree 1..7");
  constexpr float kInvFactorial[] = {1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120,
                                     1.0f / 720, 1.0f / 5040};
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;       // few mantissa bits: k * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;    // ln2 - kLn2Hi
  constexpr float kRound = 12582912.0f;        // 1.5 * 2^23: adding it rounds to an integer
  constexpr float kMax = 88.0f;                // above: inf (exp(88) = 1.65e38, FLT_MAX = 3.4e38)
  constexpr float kMin = -87.3365447505531f;   // below: result under FLT_MIN, flushed to 0
  float xc = x < kMin ? kMin : x;  // NaN passes through both clamps
  xc = xc > kMax ? kMax : xc;
  const float shifted = xc * kLog2e + kRound;
  const float k = shifted - kRound;
  const float r = (xc - k * kLn2Hi) - k * kLn2Lo;
  float p = kInvFactorial[Degree];
  for (int i = Degree - 1; i >= 0; --i) p = p * r + kInvFactorial[i];
  const int32_t k_int = std::bit_cast<int32_t>(shifted) - std::bit_cast<int32_t>(kRound);
  const float scale = std::bit_cast<float>((k_int + 127) << 23);
  const float result = p * scale;
  return x < kMin ? 0.0f : (x > kMax ? std::numeric_limits<float>::infinity() : result);
}

// exp(x) in float32, about 1 ulp.
MMMV_INLINE float exp_f32(float x) { return exp_taylor<7>(x); }

}  // namespace mmmv
