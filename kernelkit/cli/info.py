"""``kernelkit info``: the visible GPUs, the target, toolchain versions, backends and registered kernels."""

from __future__ import annotations

import os

import click
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kernelkit import __version__
from kernelkit.jit import cache
from kernelkit.jit.arch import device_target
from kernelkit.jit.backends import BACKENDS
from kernelkit.quant import registry


def _versions(backend) -> str:
    try:
        return ", ".join(f"{k} {v}" for k, v in backend.versions().items())
    except Exception as e:  # a half-installed toolchain: show why instead of failing
        return f"(version query failed: {e})"


@click.command()
def info() -> None:
    """Show the GPU, compile target, toolchains, JIT backends and registered kernels."""
    from kernelkit.ops.registry import REGISTERED

    console = Console()
    console.print(f"[bold]kernelkit[/bold] {__version__}   torch {torch.__version__}")
    target = device_target()
    if target is None:
        console.print("GPU: none visible")
    else:  # every visible GPU: what --tensor-parallel-size can use (rank r runs on cuda:r)
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            console.print(f"GPU {index}: {props.name}, {props.multi_processor_count} SMs, "
                          f"{props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}")
    override = os.environ.get("KERNELKIT_ARCH")
    shown = f"{override} (KERNELKIT_ARCH)" if override else target or "none (set KERNELKIT_ARCH)"
    console.print(f"compile target: {shown}")
    console.print(escape(f"kernel cache: {cache.cache_root()}"))

    table = Table("backend", "status", "versions", title="JIT backends")
    for name, backend in BACKENDS.items():
        reason = backend.unavailable_reason()
        status = "[green]available[/green]" if reason is None else f"[yellow]unavailable[/yellow]: {escape(reason)}"
        table.add_row(name, status, escape(_versions(backend)) if reason is None else "")
    console.print(table)

    table = Table("kernel", "implementations (fastest first)", "description", title="Registered kernels")
    for op in REGISTERED:
        table.add_row(op.name, ", ".join(op.impls), escape(op.summary))
    console.print(table)

    table = Table("scheme", "provided by", title=f"Quantization schemes (entry points '{registry.GROUP}')")
    for scheme in registry.list_schemes():
        table.add_row(scheme.name, escape(scheme.packages))
    console.print(table)
