"""Use kernelkit's 8-bit quantizers inside a plain PyTorch model, compiled with torch.compile(fullgraph=True)
and, on a GPU, replayed as a CUDA graph.

The model simulates W8A8 block-FP8 activations: each linear layer quantizes its input per token and group
of 128 columns (DeepSeek-V3 style) and dequantizes it again before the matmul, so you can measure what
activation quantization does to the output. Run: ``python examples/quant_ops_in_a_model.py``.
"""

import torch

from kernelkit.ops import per_token_group_quant_fp8


class FakeQuantLinear(torch.nn.Linear):
    """nn.Linear whose input goes through per-token-group FP8 quantization first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, scales = per_token_group_quant_fp8(x, group_size=128)
        groups = scales.shape[-1]
        x_hat = (q.to(x.dtype).unflatten(-1, (groups, 128)) * scales.unsqueeze(-1).to(x.dtype)).flatten(-2)
        return super().forward(x_hat)


def without_quantization(model: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The same layers with plain activations, for comparison."""
    for layer in model:
        is_quant = isinstance(layer, FakeQuantLinear)
        x = torch.nn.functional.linear(x, layer.weight, layer.bias) if is_quant else layer(x)
    return x


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    model = torch.nn.Sequential(FakeQuantLinear(1024, 4096), torch.nn.SiLU(), FakeQuantLinear(4096, 1024))
    model = model.to(device=device, dtype=dtype)
    x = torch.randn(64, 1024, device=device, dtype=dtype)

    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    ref = without_quantization(model, x)
    err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
    print(f"torch.compile(fullgraph=True) on {device}: output {tuple(out.shape)}, "
          f"relative error from FP8 activations {err:.2e}")

    if device == "cuda":
        static_x = x.clone()
        model(static_x)  # kernels compile and load outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = model(static_x)
        static_x.copy_(torch.randn_like(static_x))
        graph.replay()
        torch.testing.assert_close(static_out, model(static_x))
        print("CUDA graph capture and replay: matches eager")


if __name__ == "__main__":
    main()
