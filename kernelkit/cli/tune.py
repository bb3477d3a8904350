"""``kernelkit tune moe``: tune the Triton fused MoE kernel's launch configs on this GPU."""

from __future__ import annotations

from pathlib import Path

import click

from kernelkit.ops.moe import configs


def _ints(ctx, param, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected positive integers, got {text!r}")
    return values


@click.group()
def tune() -> None:
    """Tune kernels' launch configs on this GPU."""


@tune.command("moe")
@click.option("--experts", "-E", default=128, show_default=True, help="number of experts E")
@click.option("--hidden", "-H", default=2048, show_default=True, help="hidden size H")
@click.option("--inter", "-N", default=768, show_default=True, help="intermediate size per expert I (vLLM's N)")
@click.option("--top-k", default=8, show_default=True, help="experts per token")
@click.option("--dtype", type=click.Choice(["bf16", *[d for d in configs.DTYPES if d]]), default="bf16",
              show_default=True, help="expert weight type")
@click.option("--tokens", default="1,16,64,512,4096", show_default=True, callback=_ints,
              help="token counts T to tune")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=configs.CONFIG_DIR,
              show_default=True, help="where the JSON file goes (merged into an existing one)")
def moe_cmd(experts: int, hidden: int, inter: int, top_k: int, dtype: str, tokens: list[int], out_dir: Path) -> None:
    """Time a small space of launch configs per token count over one whole MoE layer (random weights, checked
    against the reference) and write the fastest as E=...,N=...,device_name=...[,dtype=...].json."""
    from kernelkit.ops.moe import tune as tuning

    weight_dtype = None if dtype == "bf16" else dtype
    try:
        table = tuning.tune(experts, hidden, inter, top_k, weight_dtype, tokens, log=click.echo)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {tuning.write(table, experts, inter, weight_dtype, out_dir)}")
