// Host launchers of the W4A16 kernels in w4a16_gemm.cuh, exported through apache-tvm-ffi.
//
// `kk::w4a16_mma_gemm<T, G, WARPS, MT, UNROLL, PF>` as `run(x, qweight, scales, zeros, y)`:
//   x:       [M, K] T (bf16 or fp16), last dim contiguous, rows 16-byte aligned
//   qweight: int32 [N / 16 (rounded up), K / 64, 32, 4], the layout of w4a16_gemm.cuh
//   scales:  [N / 16 (rounded up), K / G, 16] T;  zeros: uint8, same shape
//   y:       [M, N] T, last dim contiguous
//   PF: how many iterations ahead each warp prefetches its weights into L2 (0: none)
// `kk::w4a16_mma_dequant<T>` as `run(qweight, scales, zeros, w)`: w [N, K] T, contiguous.
// Both launch on torch's current stream.
#include <cuda_runtime.h>

#include <cstdint>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/extra/cuda/device_guard.h>
#include <tvm/ffi/function.h>

#include "host_common.h"
#include "w4a16_gemm.cuh"

namespace kk {

template <typename T>
void check_w4_layout(tvm::ffi::TensorView qweight, tvm::ffi::TensorView scales, tvm::ffi::TensorView zeros,
                     int64_t N, int64_t K, int64_t G) {
  TVM_FFI_ICHECK(K % 64 == 0 && G % 64 == 0 && K % G == 0)
      << "K " << K << " and group size " << G << " must be multiples of 64, G dividing K";
  const int64_t tiles = (N + 15) / 16;
  TVM_FFI_ICHECK(qweight.ndim() == 4 && qweight.size(0) == tiles && qweight.size(1) == K / 64 &&
                 qweight.size(2) == 32 && qweight.size(3) == 4 && qweight.IsContiguous() &&
                 same_dtype(qweight.dtype(), DLDataType{kDLInt, 32, 1}))
      << "qweight must be contiguous int32 [" << tiles << ", " << K / 64 << ", 32, 4]";
  TVM_FFI_ICHECK(scales.ndim() == 3 && scales.size(0) == tiles && scales.size(1) == K / G && scales.size(2) == 16 &&
                 scales.IsContiguous() && same_dtype(scales.dtype(), dl_dtype<T>()))
      << "scales must be contiguous [" << tiles << ", " << K / G << ", 16] in the activations' dtype";
  TVM_FFI_ICHECK(zeros.ndim() == 3 && zeros.size(0) == tiles && zeros.size(1) == K / G && zeros.size(2) == 16 &&
                 zeros.IsContiguous() && same_dtype(zeros.dtype(), DLDataType{kDLUInt, 8, 1}))
      << "zeros must be contiguous uint8 [" << tiles << ", " << K / G << ", 16]";
  TVM_FFI_ICHECK(reinterpret_cast<uintptr_t>(data<const void>(qweight)) % 16 == 0 &&
                 reinterpret_cast<uintptr_t>(data<const void>(scales)) % 16 == 0 &&
                 reinterpret_cast<uintptr_t>(data<const void>(zeros)) % 16 == 0)
      << "qweight, scales and zeros must be 16-byte aligned";
}

template <typename T, int G, int WARPS, int MT, int UNROLL, int PF>
void w4a16_mma_gemm(tvm::ffi::TensorView x, tvm::ffi::TensorView qweight, tvm::ffi::TensorView scales,
                    tvm::ffi::TensorView zeros, tvm::ffi::TensorView y) {
  TVM_FFI_ICHECK(x.ndim() == 2 && y.ndim() == 2) << "x and y must be 2-D";
  TVM_FFI_ICHECK(x.device().device_type == kDLCUDA) << "x must be on a CUDA device";
  TVM_FFI_ICHECK(same_dtype(x.dtype(), dl_dtype<T>()) && same_dtype(y.dtype(), dl_dtype<T>()))
      << "x and y have the wrong dtype for this specialization";
  const int64_t M = x.size(0), K = x.size(1), N = y.size(1);
  check_w4_layout<T>(qweight, scales, zeros, N, K, G);
  TVM_FFI_ICHECK(y.size(0) == M && y.stride(1) == 1) << "y must be [M, N] with contiguous rows";
  TVM_FFI_ICHECK(x.stride(1) == 1 && reinterpret_cast<uintptr_t>(data<const T>(x)) % 16 == 0 &&
                 ((x.stride(0) * static_cast<int64_t>(sizeof(T))) % 16 == 0 || M <= 1))
      << "x rows must be contiguous and 16-byte aligned";
  TVM_FFI_ICHECK(M < (int64_t{1} << 31) / 16 && N < (int64_t{1} << 31) && K < (int64_t{1} << 31) &&
                 M * y.stride(0) < (int64_t{1} << 31))
      << "sizes beyond the kernel's 32-bit output indexing";
  if (M == 0 || N == 0) return;
  tvm::ffi::CUDADeviceGuard guard(x.device().device_id);
  auto stream = static_cast<cudaStream_t>(TVMFFIEnvGetStream(kDLCUDA, x.device().device_id));
  const dim3 grid(static_cast<unsigned>((N + 15) / 16), static_cast<unsigned>((M + 8 * MT - 1) / (8 * MT)));
  w4a16_mma_gemm_kernel<T, G, WARPS, MT, UNROLL, PF><<<grid, WARPS * 32, 0, stream>>>(
      data<const uint4>(qweight), data<const unsigned short>(scales), data<const unsigned char>(zeros),
      data<const unsigned short>(x), data<unsigned short>(y), static_cast<int>(M), static_cast<int>(N),
      static_cast<int>(K), x.stride(0), y.stride(0));
  check_cuda(cudaGetLastError(), "w4a16_mma_gemm launch");
}

template <typename T>
void w4a16_mma_dequant(tvm::ffi::TensorView qweight, tvm::ffi::TensorView scales, tvm::ffi::TensorView zeros,
                       tvm::ffi::TensorView w) {
  TVM_FFI_ICHECK(w.ndim() == 2 && w.IsContiguous() && same_dtype(w.dtype(), dl_dtype<T>()))
      << "w must be contiguous [N, K] in the scales' dtype";
  TVM_FFI_ICHECK(w.device().device_type == kDLCUDA) << "w must be on a CUDA device";
  const int64_t N = w.size(0), K = w.size(1);
  TVM_FFI_ICHECK(scales.ndim() == 3 && scales.size(1) > 0) << "scales must be [N / 16, K / G, 16]";
  const int64_t G = K / scales.size(1);
  check_w4_layout<T>(qweight, scales, zeros, N, K, G);
  const int64_t total = qweight.size(0) * qweight.size(1) * 32;
  if (total == 0 || N == 0) return;
  TVM_FFI_ICHECK(N * K < (int64_t{1} << 40)) << "weight too large";
  tvm::ffi::CUDADeviceGuard guard(w.device().device_id);
  auto stream = static_cast<cudaStream_t>(TVMFFIEnvGetStream(kDLCUDA, w.device().device_id));
  w4a16_mma_dequant_kernel<T><<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(
      data<const uint4>(qweight), data<const unsigned short>(scales), data<const unsigned char>(zeros),
      data<unsigned short>(w), static_cast<int>(N), static_cast<int>(K), static_cast<int>(G), total);
  check_cuda(cudaGetLastError(), "w4a16_mma_dequant launch");
}

}  // namespace kk
