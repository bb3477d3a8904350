// W4A16 GEMM on tensor cores for small M (decode), and the matching dequantization for large M.
//
// Layout (written once by kernelkit/ops/w4a16/mma_layout.py, `repack_mma`): W [N, K] (y = x @ W^T) in tiles of
// 16 output rows x 64 k. Within a tile-chunk, lane l = 4 g + t of a warp holds one uint4 = 4 int32, int32 j
// feeding mma step j (m16n8k16, A = weights, rows = output features): nibble p of int32 j is
//   row  g + 8 (p % 2),   k  16 t + 4 j + 2 ((p % 4) / 2) + p / 4,
// so `(v >> 4i) & 0x000f000f` gives the i-th A register (rows g / g + 8, k pairs) as two 16-bit integers, which
// OR-ing a float's bits turns into (bias + q) exactly: bias 128 for bf16 (0x4300), 1024 for fp16 (0x6400), as
// Marlin does (Frantar et al., arXiv 2408.11743). Lane (g, t) thereby covers the 16 consecutive k
// 16 t .. 16 t + 15 of the chunk for rows g and g + 8, and its B operand (x) is 16 consecutive values of token
// g: two 16-byte loads. Zero points: uint8 [N/16, K/G, 16]; scales: T [N/16, K/G, 16].
//
// y[m, n] = sum over groups of s[n, grp] * sum_{k in grp} x[m, k] (q[n, k] - z[n, grp]): (q - z) is exact in
// T, the products and sums are the tensor cores' fp32, the scale multiplies each group's fp32 sum.
#pragma once

#include "common.cuh"

namespace kk {

template <typename T> struct W4Ops;

// (a & b) | c
__device__ __forceinline__ unsigned lop3_and_or(unsigned a, unsigned b, unsigned c) {
  unsigned d;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

template <> struct W4Ops<bf16_t> {
  static constexpr unsigned kMagic = 0x43004300u;  // 128.0, 128.0
  static constexpr float kBias = 128.0f;
  static constexpr unsigned kOne = 0x3f803f80u;
  __device__ __forceinline__ static unsigned fma2(unsigned a, unsigned b, unsigned c) {
    unsigned d;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
  }
  __device__ __forceinline__ static unsigned short from_float(float f) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
  }
  __device__ __forceinline__ static float to_float(unsigned short h) { return __uint_as_float(unsigned{h} << 16); }
  __device__ __forceinline__ static void mma(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

template <> struct W4Ops<fp16_t> {
  static constexpr unsigned kMagic = 0x64006400u;  // 1024.0, 1024.0
  static constexpr float kBias = 1024.0f;
  static constexpr unsigned kOne = 0x3c003c00u;
  __device__ __forceinline__ static unsigned fma2(unsigned a, unsigned b, unsigned c) {
    unsigned d;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
  }
  __device__ __forceinline__ static unsigned short from_float(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
  }
  __device__ __forceinline__ static float to_float(unsigned short h) { return half_bits_to_float(h); }
  __device__ __forceinline__ static void mma(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

// -(bias + z) in both halves: added to (bias + q) it leaves q - z, exactly.
template <typename T>
__device__ __forceinline__ unsigned neg_biased_zero(unsigned char z) {
  const unsigned h = W4Ops<T>::from_float(-(W4Ops<T>::kBias + static_cast<float>(z)));
  return h | (h << 16);
}

// The four A registers of mma step j from one int32 of the layout: (q - z) for rows g (z0) and g + 8 (z1).
template <typename T>
__device__ __forceinline__ void dequant_a(unsigned v, unsigned nz0, unsigned nz1, unsigned* a) {
  using Op = W4Ops<T>;
  a[0] = Op::fma2(lop3_and_or(v, 0x000f000fu, Op::kMagic), Op::kOne, nz0);
  a[1] = Op::fma2(lop3_and_or(v >> 4, 0x000f000fu, Op::kMagic), Op::kOne, nz1);
  a[2] = Op::fma2(lop3_and_or(v >> 8, 0x000f000fu, Op::kMagic), Op::kOne, nz0);
  a[3] = Op::fma2(lop3_and_or(v >> 12, 0x000f000fu, Op::kMagic), Op::kOne, nz1);
}

// x is read by every warp of the grid: through the read-only cache (ld.global.nc), unlike the weights.
__device__ __forceinline__ uint4 load_x16(const unsigned short* ptr) {
  return __ldg(reinterpret_cast<const uint4*>(ptr));
}

// Bring `bytes` (a multiple of 16) at a 16-byte aligned address into L2 ahead of its loads.
__device__ __forceinline__ void prefetch_l2(const void* ptr, unsigned bytes) {
#if __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(ptr), "r"(bytes) : "memory");
#else
  for (unsigned off = 0; off < bytes; off += 128)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(static_cast<const char*>(ptr) + off));
#endif
}

// Grid: (N / 16 tiles, ceil(M / (8 MT))); WARPS warps per block split the K groups (UNROLL groups in flight per
// warp) and add their partial sums in shared memory, in a fixed order (deterministic). A warp's loads of one
// iteration are issued together and then consumed, so between them it has no DRAM read in flight; with PF > 0
// one lane first asks L2 for the weights, scales and zeros of the iteration PF ahead (one bulk prefetch each),
// so that those loads find them in L2.
template <typename T, int G, int WARPS, int MT, int UNROLL, int PF>
__global__ void __launch_bounds__(WARPS * 32) w4a16_mma_gemm_kernel(
    const uint4* __restrict__ qweight, const unsigned short* __restrict__ scales,
    const unsigned char* __restrict__ zeros, const unsigned short* __restrict__ x, unsigned short* __restrict__ y,
    int M, int N, int K, long long x_stride, long long y_stride) {
  static_assert(G % 64 == 0, "group size must be a multiple of 64");
  constexpr int CHUNKS = G / 64;
  using Op = W4Ops<T>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int tile = blockIdx.x;
  const int m0 = blockIdx.y * 8 * MT;
  const int groups = K / G;
  const uint4* qt = qweight + static_cast<long long>(tile) * (K / 64) * 32 + lane;
  const unsigned short* st = scales + static_cast<long long>(tile) * groups * 16;
  const unsigned char* zt = zeros + static_cast<long long>(tile) * groups * 16;
  const unsigned short* xr[MT];
  bool xv[MT];
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    const int m = m0 + 8 * i + g;
    xv[i] = m < M;
    xr[i] = x + (xv[i] ? m : 0) * x_stride + 16 * t;
  }
  float acc[MT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

  for (int g0 = warp * UNROLL; g0 < groups; g0 += WARPS * UNROLL) {
    if constexpr (PF > 0) {
      const int gn = g0 + PF * WARPS * UNROLL;
      if (lane < 3 && gn < groups) {
        const unsigned n = static_cast<unsigned>(min(UNROLL, groups - gn));
        if (lane == 0) prefetch_l2(qt - lane + static_cast<long long>(gn) * CHUNKS * 32, n * CHUNKS * 512);
        if (lane == 1) prefetch_l2(st + gn * 16, n * 32);
        if (lane == 2) prefetch_l2(zt + gn * 16, n * 16);
      }
    }
    uint4 a[UNROLL][CHUNKS];
    uint4 b[UNROLL][MT][CHUNKS][2];
    unsigned char z[UNROLL][2];
    unsigned short s[UNROLL][2];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int gi = g0 + u;
      const bool ok = gi < groups;
#pragma unroll
      for (int c = 0; c < CHUNKS; ++c) {
        a[u][c] = ok ? load_streaming(qt + static_cast<long long>(gi * CHUNKS + c) * 32) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int i = 0; i < MT; ++i) {
          const unsigned short* p = xr[i] + (gi * CHUNKS + c) * 64;
          b[u][i][c][0] = ok && xv[i] ? load_x16(p) : make_uint4(0, 0, 0, 0);
          b[u][i][c][1] = ok && xv[i] ? load_x16(p + 8) : make_uint4(0, 0, 0, 0);
        }
      }
      z[u][0] = ok ? zt[gi * 16 + g] : 0;
      z[u][1] = ok ? zt[gi * 16 + g + 8] : 0;
      s[u][0] = ok ? st[gi * 16 + g] : 0;
      s[u][1] = ok ? st[gi * 16 + g + 8] : 0;
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const unsigned nz0 = neg_biased_zero<T>(z[u][0]), nz1 = neg_biased_zero<T>(z[u][1]);
      float part[MT][4];
#pragma unroll
      for (int i = 0; i < MT; ++i) part[i][0] = part[i][1] = part[i][2] = part[i][3] = 0.0f;
#pragma unroll
      for (int c = 0; c < CHUNKS; ++c) {
        const unsigned w[4] = {a[u][c].x, a[u][c].y, a[u][c].z, a[u][c].w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          unsigned regs[4];
          dequant_a<T>(w[j], nz0, nz1, regs);
#pragma unroll
          for (int i = 0; i < MT; ++i) {
            const uint4& lo = b[u][i][c][0];
            const uint4& hi = b[u][i][c][1];
            const unsigned xs[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
            Op::mma(part[i], regs, xs[2 * j], xs[2 * j + 1]);
          }
        }
      }
      const float s0 = Op::to_float(s[u][0]), s1 = Op::to_float(s[u][1]);
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        acc[i][0] += part[i][0] * s0;
        acc[i][1] += part[i][1] * s0;
        acc[i][2] += part[i][2] * s1;
        acc[i][3] += part[i][3] * s1;
      }
    }
  }

  __shared__ float red[WARPS][MT * 4][32];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int r = 0; r < 4; ++r) red[warp][i * 4 + r][lane] = acc[i][r];
  __syncthreads();
  for (int idx = threadIdx.x; idx < MT * 4 * 32; idx += WARPS * 32) {
    const int l = idx & 31, ir = idx >> 5, i = ir >> 2, r = ir & 3;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) sum += red[w][ir][l];
    const int n = tile * 16 + (l >> 2) + 8 * (r >> 1);
    const int m = m0 + 8 * i + 2 * (l & 3) + (r & 1);
    if (n < N && m < M) y[m * y_stride + n] = Op::from_float(sum);
  }
}

// W [N, K] in T (as (q - z) * s in fp32, rounded once) from the layout: one thread per uint4.
template <typename T>
__global__ void __launch_bounds__(256) w4a16_mma_dequant_kernel(
    const uint4* __restrict__ qweight, const unsigned short* __restrict__ scales,
    const unsigned char* __restrict__ zeros, unsigned short* __restrict__ w, int N, int K, int G,
    long long total) {
  using Op = W4Ops<T>;
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int lane = static_cast<int>(idx & 31);
  const long long tc = idx >> 5;  // tile * (K / 64) + chunk
  const int chunks = K / 64;
  const int tile = static_cast<int>(tc / chunks), chunk = static_cast<int>(tc % chunks);
  const int g = lane >> 2, t = lane & 3;
  const int k0 = chunk * 64 + 16 * t;
  const int grp = k0 / G;
  const long long sz = (static_cast<long long>(tile) * (K / G) + grp) * 16;
  const uint4 v = load_streaming(qweight + idx);
  const unsigned ws[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int half = 0; half < 2; ++half) {  // rows g, g + 8
    const int n = tile * 16 + g + 8 * half;
    if (n >= N) continue;
    const float s = Op::to_float(scales[sz + g + 8 * half]);
    const float z = static_cast<float>(zeros[sz + g + 8 * half]);
    unsigned out[8];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float q[4];  // k = k0 + 4 j + 0..3: nibbles half, half + 4, half + 2, half + 6
      q[0] = static_cast<float>((ws[j] >> (4 * half)) & 15u);
      q[1] = static_cast<float>((ws[j] >> (4 * (half + 4))) & 15u);
      q[2] = static_cast<float>((ws[j] >> (4 * (half + 2))) & 15u);
      q[3] = static_cast<float>((ws[j] >> (4 * (half + 6))) & 15u);
      out[2 * j] = unsigned{Op::from_float((q[0] - z) * s)} | (unsigned{Op::from_float((q[1] - z) * s)} << 16);
      out[2 * j + 1] = unsigned{Op::from_float((q[2] - z) * s)} | (unsigned{Op::from_float((q[3] - z) * s)} << 16);
    }
    uint4* dst = reinterpret_cast<uint4*>(w + static_cast<long long>(n) * K + k0);
    dst[0] = make_uint4(out[0], out[1], out[2], out[3]);
    dst[1] = make_uint4(out[4], out[5], out[6], out[7]);
  }
}

}  // namespace kk
