// Host launcher of per_token_group_quant_8bit_kernel, exported through apache-tvm-ffi.
//
// The JIT instantiates `kk::per_token_group_quant_8bit<T, Out, GROUP, UE8M0, UNROLL>` in a generated translation
// unit and exports it as `run(x, q, s, eps)`:
//   x: [M, H] T (bf16/fp16/fp32), last dim contiguous, rows 16-byte aligned
//   q: [M, H] 1-byte (float8_e4m3fn passed as uint8, or int8), contiguous
//   s: [M, H / GROUP] float32, any non-overlapping strides
//   waves: grid size in resident waves (blocks = waves * blocks that fit on the device); <= 0: one block per
//          GROUPS_PER_BLOCK groups. The kernel strides over the groups, so any grid is correct.
// It launches on torch's current stream (tvm-ffi receives it with the tensors).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/extra/cuda/device_guard.h>
#include <tvm/ffi/function.h>

#include "host_common.h"
#include "per_token_group_quant.cuh"

namespace kk {

// Multiplier and shift for div_by (common.cuh): n / d == (umulhi(n, mul) + n) >> shift for every 32-bit n.
// Granlund & Montgomery (PLDI 1994), Theorem 4.2, with shift = ceil(log2 d). d must be >= 1.
inline void div_magic(uint32_t d, uint32_t* mul, uint32_t* shift) {
  uint32_t sh = 0;
  while ((uint64_t{1} << sh) < d) ++sh;
  *mul = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << sh) - d)) / d + 1);
  *shift = sh;
}

// How many blocks of kQuantBlockThreads fit on the whole device at once: one wave.
template <typename Kernel>
int64_t resident_blocks(Kernel kernel, int device) {
  static int per_sm = -1;  // one value per kernel instantiation
  int sms = 0;
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  if (per_sm < 0) {
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kQuantBlockThreads, 0),
               "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  }
  return static_cast<int64_t>(sms) * per_sm;
}

template <typename T, typename Out, int GROUP, bool UE8M0, int UNROLL>
void per_token_group_quant_8bit(tvm::ffi::TensorView x, tvm::ffi::TensorView q, tvm::ffi::TensorView s,
                                double eps, int64_t waves) {
  TVM_FFI_ICHECK(x.ndim() == 2 && q.ndim() == 2 && s.ndim() == 2) << "x, q, s must be 2-D";
  TVM_FFI_ICHECK(x.device().device_type == kDLCUDA) << "x must be on a CUDA device";
  TVM_FFI_ICHECK(same_dtype(x.dtype(), dl_dtype<T>())) << "x has the wrong dtype for this specialization";
  TVM_FFI_ICHECK(same_dtype(q.dtype(), dl_dtype<Out>())) << "q has the wrong dtype for this specialization";
  TVM_FFI_ICHECK(same_dtype(s.dtype(), dl_dtype<float>())) << "scales must be float32";
  const int64_t M = x.size(0), H = x.size(1);
  TVM_FFI_ICHECK(H % GROUP == 0) << "hidden size " << H << " is not a multiple of group size " << GROUP;
  TVM_FFI_ICHECK(q.size(0) == M && q.size(1) == H && q.IsContiguous()) << "q must be contiguous [M, H]";
  TVM_FFI_ICHECK(s.size(0) == M && s.size(1) == H / GROUP) << "scales must be [M, H / group_size]";
  TVM_FFI_ICHECK(x.stride(1) == 1) << "x must be contiguous in its last dimension";
  TVM_FFI_ICHECK((reinterpret_cast<uintptr_t>(data<const T>(x)) % 16 == 0) &&
                 ((x.stride(0) * static_cast<int64_t>(sizeof(T))) % 16 == 0 || M <= 1))
      << "x rows must be 16-byte aligned";
  if (M == 0) return;

  using Shape = GroupShape<T, GROUP, UNROLL>;
  const int64_t num_groups = M * (H / GROUP);
  TVM_FFI_ICHECK(num_groups < (int64_t{1} << 31))
      << "input too large: " << num_groups << " groups; the kernel indexes at most 2^31 - 1";
  tvm::ffi::CUDADeviceGuard guard(x.device().device_id);
  const int64_t needed = (num_groups + Shape::kGroupsPerBlock - 1) / Shape::kGroupsPerBlock;
  const int64_t blocks = waves <= 0 ? needed : std::min<int64_t>(
      needed, waves * resident_blocks(per_token_group_quant_8bit_kernel<T, Out, GROUP, UE8M0, UNROLL>,
                                      x.device().device_id));
  uint32_t gpr_mul, gpr_shift;
  div_magic(static_cast<uint32_t>(H / GROUP), &gpr_mul, &gpr_shift);
  auto stream = static_cast<cudaStream_t>(TVMFFIEnvGetStream(kDLCUDA, x.device().device_id));
  per_token_group_quant_8bit_kernel<T, Out, GROUP, UE8M0, UNROLL>
      <<<static_cast<unsigned>(blocks), kQuantBlockThreads, 0, stream>>>(
          data<const T>(x), data<unsigned char>(q), data<float>(s), static_cast<uint32_t>(num_groups),
          static_cast<uint32_t>(H / GROUP), gpr_mul, gpr_shift, x.stride(0), s.stride(0), s.stride(1),
          static_cast<float>(eps));
  check_cuda(cudaGetLastError(), "per_token_group_quant_8bit launch");
}

}  // namespace kk
