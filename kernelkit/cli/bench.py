"""``kernelkit bench gemm | quant | moe``: kernelkit's kernels beside their baselines at your shapes, on this GPU
(``kernelkit.bench.cases``); ``--json`` writes the benches' ``timings.json`` format (``kernelkit.bench.timings``), which
``benches/regress.py`` compares and ``benches/plots.py`` draws."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
import torch
from rich.console import Console
from rich.table import Table

from kernelkit.bench import timings
from kernelkit.cli.tune import _ints


def _run(kind: str, measure: Callable[[], list[dict]], json_path: Path | None) -> None:
    """Measure on the GPU, print the table and write the timings; a missing GPU or a shape the comparison
    refuses (ValueError) is a ClickException."""
    if not torch.cuda.is_available():
        raise click.ClickException("kernelkit bench needs a CUDA GPU, and torch sees none")
    try:
        cases = measure()
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    _report(kind, cases, json_path)


def _report(kind: str, cases: list[dict], json_path: Path | None) -> None:
    table = Table(title=f"kernelkit bench {kind}: {torch.cuda.get_device_name()} (µs, CUDA-graph medians)")
    impls = list(dict.fromkeys(n for c in cases for n in (*c["ours"], *c["peers"])))
    for col in (*cases[0]["params"], *impls, "best peer / kernelkit"):
        table.add_column(col, justify="right")
    for c in cases:
        times = {**c["ours"], **c["peers"]}
        cells = []
        for name in impls:
            ms = times.get(name)
            rate = ""
            if ms is not None and c["flops"]:
                rate = f" ({c['flops'] / ms / 1e9:.0f} TFLOP/s)"
            elif ms is not None and c["nbytes"]:
                rate = f" ({c['nbytes'] / ms / 1e6:.0f} GB/s)"
            cells.append("–" if ms is None else f"{ms * 1e3:.1f}{rate}")
        best_ours, best_peer = min(c["ours"].values()), min(c["peers"].values())
        table.add_row(*map(str, c["params"].values()), *cells, f"{best_peer / best_ours:.2f}x")
    Console().print(table)
    if json_path:
        keyed = {f"kernelkit bench {kind}[{'-'.join(map(str, c['params'].values()))}]": {"table": f"bench_{kind}", **c}
                 for c in cases}
        timings.write(json_path, keyed)
        click.echo(f"wrote {json_path}")


_json = click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="also write the numbers as a timings.json (benches/regress.py, benches/plots.py)")


@click.group()
def bench() -> None:
    """Time kernelkit's kernels beside their baselines at your shapes (needs a CUDA GPU)."""


@bench.command("gemm")
@click.option("--n", "n", required=True, type=int, help="output features N (a multiple of 128)")
@click.option("--k", "k", required=True, type=int, help="input features K (a multiple of 128)")
@click.option("--m", "ms", default="1,16,64,256,1024,4096", show_default=True, callback=_ints, help="rows M")
@_json
def gemm_cmd(n: int, k: int, ms: list[int], json_path: Path | None) -> None:
    """Block-FP8 GEMM against bf16 cuBLAS and cuBLAS block-wise."""
    from kernelkit.bench import cases

    _run("gemm", lambda: cases.gemm(n, k, ms), json_path)


@bench.command("quant")
@click.option("--hidden", "-H", required=True, type=int, help="hidden size (a multiple of the group size)")
@click.option("--tokens", default="1,16,128,1024,4096,16384", show_default=True, callback=_ints, help="tokens T")
@click.option("--group-size", default=128, show_default=True, help="elements per scale")
@_json
def quant_cmd(hidden: int, tokens: list[int], group_size: int, json_path: Path | None) -> None:
    """per_token_group_quant_fp8 against the torch reference, eager and compiled."""
    from kernelkit.bench import cases

    _run("quant", lambda: cases.quant(hidden, tokens, group_size), json_path)


@bench.command("moe")
@click.option("--experts", "-E", default=128, show_default=True, help="number of experts E")
@click.option("--top-k", default=8, show_default=True, help="experts per token")
@click.option("--hidden", "-H", default=2048, show_default=True, help="hidden size H")
@click.option("--inter", "-N", default=768, show_default=True, help="intermediate size per expert I")
@click.option("--tokens", default="1,16,64,512,4096", show_default=True, callback=_ints, help="tokens T")
@_json
def moe_cmd(experts: int, top_k: int, hidden: int, inter: int, tokens: list[int], json_path: Path | None) -> None:
    """One MoE layer: fused_experts (bf16, W8A8, W4A8) against torch._grouped_mm."""
    from kernelkit.bench import cases

    _run("moe", lambda: cases.moe(experts, top_k, hidden, inter, tokens), json_path)
