"""Run the W4A16 tensor-core kernel a few times per shape and config, for Nsight Compute
(scripts/ncu_w4a16.sh): arguments M,N,K,WARPS,MT,UNROLL,PF (random weights, group 128, bf16)."""
import sys

import torch

from kernelkit.ops.w4a16 import cuda_impl, mma_layout
from kernelkit.quant.awq.format import quantize

for arg in sys.argv[1:]:
    m, n, k, *cfg = map(int, arg.split(","))
    q, scales, zeros = quantize(torch.randn(n, k, device="cuda") * 0.02, 128)
    packed = mma_layout.repack_mma(q, zeros, scales, 128, torch.bfloat16)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        cuda_impl.gemm(x, *packed, n, 128, tuple(cfg))
    torch.cuda.synchronize()
