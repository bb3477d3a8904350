"""``kernelkit jit list | warmup | clear``: inspect, fill and empty the per-architecture kernel cache."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import click
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kernelkit.jit import CompileError, JitDisabled, cache, current_target, ensure_built, parse_target
from kernelkit.jit.arch import device_target
from kernelkit.jit.backends import get_backend
from kernelkit.jit.loader import jit_disabled


def _target_option(f):
    return click.option("--arch", "arch", default=None, metavar="TARGET",
                        help="compile target such as sm_90a (default: $KERNELKIT_ARCH or the GPU's)")(f)


@click.group()
def jit() -> None:
    """Inspect, warm up or clear the kernel cache."""


@jit.command("list")
@click.option("--arch", default=None, help="only entries for this target")
def list_cmd(arch: str | None) -> None:
    """List cached kernels with their target, size and age."""
    target = _target_name(arch)
    entries = [e for e in cache.list_entries() if target is None or e.arch == target]
    roots = ", ".join(str(r) for r in cache.search_roots())
    table = Table("arch", "backend", "kernel", "size", "age", "status", title=escape(f"kernel cache {roots}"))
    for e in entries:
        table.add_row(e.arch, e.backend, escape(e.name), f"{e.size / 1024:.0f} KiB", _age(e.age_s),
                      "ok" if e.valid else "[red]corrupt (rebuilt on next use)[/red]")
    Console().print(table if entries else "no cached kernels")


def _target_name(arch: str | None) -> str | None:
    """The canonical target name of ``--arch``, or a usage error naming the bad value."""
    if arch is None:
        return None
    try:
        return parse_target(arch).name
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--arch") from None


def _age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f}{unit}"
    return f"{seconds:.0f}s"


@jit.command()
@_target_option
@click.argument("kernels", nargs=-1)
def warmup(arch: str | None, kernels: tuple[str, ...]) -> None:
    """Compile the registered KERNELS (default: all) and their common specializations ahead of time.

    Works without a GPU given --arch (nvcc and NVRTC builds). Triton kernels compile through Triton and
    need a GPU of the target's architecture: they are run once on small inputs when one is present.
    """
    from kernelkit.ops.registry import find

    try:
        ops = find(list(kernels))
        target = parse_target(arch) if arch else current_target()
    except (KeyError, ValueError, RuntimeError) as e:
        raise click.UsageError(str(e.args[0] if e.args else e)) from None
    specs = [spec for op in ops for spec in op.specs()]
    console = Console()
    table = Table("kernel", "backend", "result", "seconds", title=f"warmup for {target}")
    failed = 0

    def build(spec):
        reason = get_backend(spec.backend).unavailable_reason()
        if reason:
            return spec, f"[yellow]skipped[/yellow]: {escape(reason)}", 0.0
        t0 = time.perf_counter()
        try:
            _, built = ensure_built(spec, target)
            return spec, "built" if built else "cached", time.perf_counter() - t0
        except JitDisabled:
            return spec, "[red]not cached[/red] (KERNELKIT_DISABLE_JIT is set)", 0.0
        except CompileError as e:
            return spec, f"[red]FAILED[/red]: {escape(str(e))}", time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=cache.max_jobs()) as pool:
        for spec, result, seconds in pool.map(build, specs):
            failed += result.startswith("[red]")
            table.add_row(escape(spec.label), spec.backend, result, f"{seconds:.1f}")
    console.print(table)
    if failed and jit_disabled():
        raise click.ClickException(f"{failed} kernel(s) are not cached and KERNELKIT_DISABLE_JIT is set: unset it "
                                   "to compile them")
    if device_target() == target:
        device = torch.device("cuda")
        for op in ops:
            op.exercise(device)
        console.print(f"Triton variants compiled by running {[op.name for op in ops]} on {device}")
    else:
        console.print("Triton kernels: no GPU of this target here; they compile on first use")
    if failed:
        raise SystemExit(f"{failed} kernel(s) failed to compile")


@jit.command()
@click.option("--arch", default=None, help="only this target (default: every target)")
def clear(arch: str | None) -> None:
    """Delete kernelkit's cached kernels (and Triton's per-arch cache); nothing kernelkit did not create."""
    removed, left = cache.clear(_target_name(arch))
    lines = [f"removed {p}" for p in removed] + [f"left {p}: not created by kernelkit" for p in left]
    click.echo("\n".join(lines) or "nothing to remove")
