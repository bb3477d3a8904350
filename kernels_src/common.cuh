// Device helpers shared by kernelkit's CUDA kernels.
//
// This header includes no CUDA headers on purpose: it compiles under nvcc and under NVRTC (which has
// neither the toolkit headers nor a C++ standard library). Conversions use PTX directly.
#pragma once

namespace kk {

// Element type tags. Storage is raw bits; conversions are explicit below.
struct bf16_t { unsigned short bits; };
struct fp16_t { unsigned short bits; };
struct e4m3_t { unsigned char bits; };  // float8_e4m3fn
struct s8_t { signed char bits; };      // int8

// 16-byte global load that bypasses L1 allocation: the quantizers read every input byte exactly once.
__device__ __forceinline__ uint4 load_streaming(const void* ptr) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(ptr));
  return v;
}

__device__ __forceinline__ float half_bits_to_float(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

// Unpack one 16-byte vector of T into floats (N = 16 / sizeof(T) values).
template <typename T> struct Vec16;

template <> struct Vec16<float> {
  static constexpr int N = 4;
  __device__ __forceinline__ static void unpack(uint4 v, float* f) {
    f[0] = __uint_as_float(v.x); f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z); f[3] = __uint_as_float(v.w);
  }
};

template <> struct Vec16<bf16_t> {
  static constexpr int N = 8;
  __device__ __forceinline__ static void unpack(uint4 v, float* f) {
    const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
};

template <> struct Vec16<fp16_t> {
  static constexpr int N = 8;
  __device__ __forceinline__ static void unpack(uint4 v, float* f) {
    const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = half_bits_to_float(static_cast<unsigned short>(w[i] & 0xffffu));
      f[2 * i + 1] = half_bits_to_float(static_cast<unsigned short>(w[i] >> 16));
    }
  }
};

// Quantized output types: their largest magnitude, and how to pack 4 already-scaled floats into 4 bytes.
template <typename Out> struct Quant8;

template <> struct Quant8<e4m3_t> {
  static constexpr float kMax = 448.0f;
  // Round to nearest even, saturating to +-448; NaN stays NaN (PTX cvt ... satfinite).
  __device__ __forceinline__ static unsigned pack4(const float* y) {
    unsigned short lo, hi;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(lo) : "f"(y[1]), "f"(y[0]));
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(hi) : "f"(y[3]), "f"(y[2]));
    return static_cast<unsigned>(lo) | (static_cast<unsigned>(hi) << 16);
  }
};

template <> struct Quant8<s8_t> {
  static constexpr float kMax = 127.0f;
  // Round half to even; NaN -> 0 (cvt.rni.s32.f32 semantics); clamp to the symmetric range [-127, 127].
  __device__ __forceinline__ static unsigned pack4(const float* y) {
    unsigned out = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      int r = __float2int_rn(y[i]);
      r = r > 127 ? 127 : (r < -127 ? -127 : r);
      out |= (static_cast<unsigned>(r) & 0xffu) << (8 * i);
    }
    return out;
  }
};

// |x| as its bit pattern. For non-negative floats the unsigned order of the bits is the numeric order,
// and a NaN (exponent all ones, mantissa non-zero) sorts above +inf: an unsigned max propagates NaN,
// as torch.amax does, where fmaxf would drop it.
__device__ __forceinline__ unsigned abs_bits(float x) { return __float_as_uint(x) & 0x7fffffffu; }

// n / d for a divisor d fixed at launch, as a multiply-high, an add and a shift: `mul` and `shift` come from the
// host (div_magic in the launchers). Exact for every 32-bit n. Granlund & Montgomery, "Division by invariant
// integers using multiplication" (PLDI 1994), Theorem 4.2; CUTLASS's FastDivmod uses the same identity.
// A 64-bit `/` compiles to a ~70-instruction subroutine, which made the quantizer issue-bound.
__device__ __forceinline__ unsigned div_by(unsigned n, unsigned mul, unsigned shift) {
  return static_cast<unsigned>((static_cast<unsigned long long>(__umulhi(n, mul)) + n) >> shift);
}

// Smallest power of two >= s, for positive normal s (UE8M0 scales, as DeepGEMM wants them).
// Inf and NaN pass through unchanged.
__device__ __forceinline__ float round_up_pow2(float s) {
  unsigned b = __float_as_uint(s);
  if ((b & 0x7f800000u) != 0x7f800000u && (b & 0x007fffffu) != 0u) b = (b & 0xff800000u) + 0x00800000u;
  return __uint_as_float(b);
}

}  // namespace kk
