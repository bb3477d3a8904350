"""One launch of the CUDA per-token-group quantizer at the DeepSeek-V3 shape, for ncu (scripts/gpu_check.sh)."""

import torch

from kernelkit.ops.quant import cuda_impl

x = torch.randn(16384, 7168, device="cuda", dtype=torch.bfloat16)
q = torch.empty(x.shape, device="cuda", dtype=torch.float8_e4m3fn)
s = torch.empty(16384, 7168 // 128, device="cuda")
cuda_impl.group_quant_tvm_ffi(x, q, s, 128, 1e-10, False)
torch.cuda.synchronize()
