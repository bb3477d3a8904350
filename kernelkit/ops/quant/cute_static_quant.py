"""CuTe DSL kernel: static per-tensor FP8 quantization, q = fp8(clamp(x * (1 / scale), -448, 448)).

This module is the kernel's source for the JIT's ``cute`` backend (its contents enter the cache key), so it
imports cutlass at the top and must only be imported where nvidia-cutlass-dsl is installed.

Tiling follows CuTe's canonical elementwise pattern (CUTLASS ``examples/python/CuTeDSL/ampere/
elementwise_add.py``): x is viewed as [M, N]; a CTA of 4 x 32 threads covers a (4 * ROWS_PER_THREAD) x
(32 * VEC) tile, each thread moving 16 bytes of input per row it owns; an identity tensor predicates the
ragged edges. Semantics match ``reference.per_tensor_quant_fp8_ref`` with a given scale.
"""

from __future__ import annotations

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute

FP8_MAX = 448.0
ROWS_PER_THREAD = 4

_DTYPES = {"bf16": cutlass.BFloat16, "fp16": cutlass.Float16, "fp32": cutlass.Float32}


@cute.kernel
def _static_quant_kernel(g_x: cute.Tensor, g_q: cute.Tensor, g_crd: cute.Tensor, m_scale: cute.Tensor,
                         shape: cute.Shape, thr_layout: cute.Layout, val_layout: cute.Layout):
    tidx, _, _ = cute.arch.thread_idx()
    bidx, _, _ = cute.arch.block_idx()
    blk = ((None, None), bidx)
    load_atom = cute.make_copy_atom(cute.nvgpu.CopyUniversalOp(), g_x.element_type)
    store_atom = cute.make_copy_atom(cute.nvgpu.CopyUniversalOp(), g_q.element_type)
    thr_x = cute.make_tiled_copy_tv(load_atom, thr_layout, val_layout).get_slice(tidx).partition_S(g_x[blk])
    thr_q = cute.make_tiled_copy_tv(store_atom, thr_layout, val_layout).get_slice(tidx).partition_S(g_q[blk])
    thr_crd = cute.make_tiled_copy_tv(store_atom, thr_layout, val_layout).get_slice(tidx).partition_S(g_crd[blk])
    pred = cute.make_rmem_tensor(thr_crd.shape, cutlass.Boolean)
    for i in range(cute.size(pred)):
        pred[i] = cute.elem_less(thr_crd[i], shape)
    frg_x = cute.make_fragment_like(thr_x)
    frg_q = cute.make_fragment_like(thr_q)
    cute.copy(load_atom, thr_x, frg_x, pred=pred)
    inv_scale = cutlass.Float32(1.0) / m_scale[0]
    y = frg_x.load().to(cutlass.Float32) * inv_scale
    y = cute.where(y > FP8_MAX, FP8_MAX, cute.where(y < -FP8_MAX, -FP8_MAX, y))  # NaN passes through
    frg_q.store(y.to(cutlass.Float8E4M3FN))
    cute.copy(store_atom, frg_q, thr_q, pred=pred)


@cute.jit
def _static_quant(m_x: cute.Tensor, m_q: cute.Tensor, m_scale: cute.Tensor, stream: cuda.CUstream):
    vec = 128 // m_x.element_type.width
    thr_layout = cute.make_ordered_layout((4, 32), order=(1, 0))
    val_layout = cute.make_ordered_layout((ROWS_PER_THREAD, vec), order=(1, 0))
    tiler, tv_layout = cute.make_layout_tv(thr_layout, val_layout)
    g_x = cute.zipped_divide(m_x, tiler)
    g_q = cute.zipped_divide(m_q, tiler)
    g_crd = cute.zipped_divide(cute.make_identity_tensor(m_q.shape), tiler=tiler)
    _static_quant_kernel(g_x, g_q, g_crd, m_scale, m_q.shape, thr_layout, val_layout).launch(
        grid=[cute.size(g_q, mode=[1]), 1, 1], block=[cute.size(tv_layout, mode=[0]), 1, 1], stream=stream)


def build(dtype: str, *, target: str):
    """Compile the kernel for inputs of ``dtype`` (bf16/fp16/fp32) with TVM-FFI calling convention.

    The compiled function takes contiguous torch tensors (x [M, N], q [M, N] float8_e4m3fn, scale [1] fp32),
    N a multiple of 16 and both 16-byte aligned, and runs on torch's current stream (tvm-ffi's env stream).
    """
    m, n = cute.sym_int(), cute.sym_int(divisibility=16)
    x = cute.runtime.make_fake_compact_tensor(_DTYPES[dtype], (m, n), stride_order=(1, 0), assumed_align=16)
    q = cute.runtime.make_fake_compact_tensor(cutlass.Float8E4M3FN, (m, n), stride_order=(1, 0), assumed_align=16)
    scale = cute.runtime.make_fake_compact_tensor(cutlass.Float32, (1,))
    stream = cute.runtime.make_fake_stream(use_tvm_ffi_env_stream=True)
    return cute.compile(_static_quant, x, q, scale, stream, options=f"--enable-tvm-ffi --gpu-arch={target}")
