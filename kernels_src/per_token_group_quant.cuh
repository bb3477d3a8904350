// Per-token-group 8-bit quantization: the activation quantizer of block-FP8 and int8 GEMMs.
//
// For every row of x [M, H] and every group of GROUP consecutive columns:
//   amax  = max(|x_group|), clamped below by eps (NaN propagates)
//   scale = amax / qmax            (qmax = 448 for float8_e4m3fn, 127 for int8), rounded up to a power
//                                   of two when UE8M0
//   q     = cast(x_group * (1 / scale))  (IEEE reciprocal once per group; RNE, saturating; int8 NaN -> 0)
// Algorithm and layout: DeepSeek-V3 / DeepGEMM activation quantization; sglang `per_token_group_quant_8bit`
// and vLLM `per_token_group_quant_fp8` (python/sglang/srt/layers/quantization/fp8_kernel.py). Scales are
// written through (stride_m, stride_g), so row-major, column-major and TMA-aligned layouts are one kernel.
//
// Mapping: TPG threads share one group (TPG = min(GROUP / vector, 16)); a thread covers UNROLL groups per
// step of a grid-stride loop and issues all its 16-byte loads before reducing; each group's max is reduced
// with warp shuffles over its TPG lanes.
// Device code only, so NVRTC can compile it too.
#pragma once
#include "common.cuh"

namespace kk {

constexpr int kQuantBlockThreads = 256;

template <typename T, int GROUP, int UNROLL>
struct GroupShape {
  static constexpr int kVec = Vec16<T>::N;                    // elements per 16-byte vector
  static constexpr int kVecs = GROUP / kVec;                  // vectors per group
  static constexpr int kThreads = kVecs < 16 ? kVecs : 16;    // threads per group
  static constexpr int kVecsPerThread = kVecs / kThreads;
  // Groups each thread covers per step: its UNROLL * kVecsPerThread 16-byte loads are all in flight before
  // any is used. One load per thread (~32 KB per SM at full occupancy) is too little to cover HBM latency
  // at 4+ TB/s (Little's law); more costs registers, hence occupancy. benches/ picks the default.
  static constexpr int kGroupsPerThread = UNROLL;
  static constexpr int kRowsPerBlock = kQuantBlockThreads / kThreads;  // groups side by side in a block
  static constexpr int kGroupsPerBlock = kRowsPerBlock * kGroupsPerThread;
  static_assert(GROUP % kVec == 0 && kVecs % kThreads == 0, "group must be a whole number of vectors");
  static_assert((kThreads & (kThreads - 1)) == 0, "group size must be a power of two (shuffle reduction)");
};

template <typename T, typename Out, int GROUP, bool UE8M0, int UNROLL>
__global__ void __launch_bounds__(kQuantBlockThreads)
per_token_group_quant_8bit_kernel(const T* __restrict__ x, unsigned char* __restrict__ q, float* __restrict__ s,
                                  unsigned num_groups, unsigned groups_per_row, unsigned gpr_mul, unsigned gpr_shift,
                                  long long x_row_stride, long long s_stride_m, long long s_stride_g, float eps) {
  using Shape = GroupShape<T, GROUP, UNROLL>;
  constexpr int V = Shape::kVec, TPG = Shape::kThreads, VPT = Shape::kVecsPerThread;
  constexpr int U = Shape::kGroupsPerThread;

  const int lane = threadIdx.x % TPG;
  // Persistent grid when the host caps it: blocks stride over the groups. The host keeps num_groups < 2^31,
  // so 32-bit group indices never overflow; byte offsets are 64-bit.
  const unsigned stride = gridDim.x * Shape::kGroupsPerBlock;
  for (unsigned base = blockIdx.x * Shape::kGroupsPerBlock; base < num_groups; base += stride) {
    unsigned row[U], col[U];  // group gid = row * groups_per_row + col
    uint4 raw[U][VPT];
#pragma unroll
    for (int u = 0; u < U; ++u) {  // issue every load before any use
      const unsigned gid = base + u * Shape::kRowsPerBlock + threadIdx.x / TPG;
      row[u] = div_by(gid, gpr_mul, gpr_shift);
      col[u] = gid - row[u] * groups_per_row;
      const bool valid = gid < num_groups;
      const T* xg = x + row[u] * x_row_stride + col[u] * GROUP;
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        raw[u][j] = valid ? load_streaming(xg + (j * TPG + lane) * V) : make_uint4(0u, 0u, 0u, 0u);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float v[VPT][V];
      unsigned amax_bits = 0u;
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        Vec16<T>::unpack(raw[u][j], v[j]);
#pragma unroll
        for (int k = 0; k < V; ++k) amax_bits = max(amax_bits, abs_bits(v[j][k]));
      }
#pragma unroll
      for (int offset = TPG / 2; offset > 0; offset /= 2) {
        amax_bits = max(amax_bits, __shfl_xor_sync(0xffffffffu, amax_bits, offset));
      }
      const unsigned gid = base + u * Shape::kRowsPerBlock + threadIdx.x / TPG;
      if (gid >= num_groups) continue;
      float amax = __uint_as_float(amax_bits);
      amax = amax < eps ? eps : amax;  // keeps NaN, unlike fmaxf
      float scale = __fdiv_rn(amax, Quant8<Out>::kMax);
      if (UE8M0) scale = round_up_pow2(scale);
      if (lane == 0) s[row[u] * s_stride_m + col[u] * s_stride_g] = scale;
      const float inv_scale = __frcp_rn(scale);

      unsigned char* qg = q + static_cast<unsigned long long>(gid) * GROUP;
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        float y[V];
#pragma unroll
        for (int k = 0; k < V; ++k) y[k] = __fmul_rn(v[j][k], inv_scale);
        unsigned char* dst = qg + (j * TPG + lane) * V;
        if constexpr (V == 8) {
          *reinterpret_cast<uint2*>(dst) = make_uint2(Quant8<Out>::pack4(y), Quant8<Out>::pack4(y + 4));
        } else {
          *reinterpret_cast<unsigned*>(dst) = Quant8<Out>::pack4(y);
        }
      }
    }
  }
}

}  // namespace kk
