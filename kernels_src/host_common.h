// Host-side helpers shared by kernelkit's tvm-ffi launchers (*.cu): dtype checks, data pointers, CUDA errors.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>

#include "common.cuh"

namespace kk {

template <typename T> constexpr DLDataType dl_dtype();
template <> constexpr DLDataType dl_dtype<float>() { return {kDLFloat, 32, 1}; }
template <> constexpr DLDataType dl_dtype<bf16_t>() { return {kDLBfloat, 16, 1}; }
template <> constexpr DLDataType dl_dtype<fp16_t>() { return {kDLFloat, 16, 1}; }
template <> constexpr DLDataType dl_dtype<e4m3_t>() { return {kDLUInt, 8, 1}; }
template <> constexpr DLDataType dl_dtype<s8_t>() { return {kDLInt, 8, 1}; }

inline bool same_dtype(DLDataType a, DLDataType b) {
  return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes;
}

template <typename T>
T* data(tvm::ffi::TensorView t) {
  return reinterpret_cast<T*>(static_cast<char*>(t.data_ptr()) + t.byte_offset());
}

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) TVM_FFI_THROW(RuntimeError) << what << ": " << cudaGetErrorString(err);
}

}  // namespace kk
