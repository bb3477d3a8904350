"""``kernelkit convert SRC DST --scheme fp8-block``: HF or GGUF checkpoint -> quantized safetensors."""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from kernelkit.convert import ConvertError, convert
from kernelkit.convert.plan import Plan
from kernelkit.quant import SchemeError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'1GB', '500MB', '2GiB' or a byte count -> bytes (HF's max_shard_size convention)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise click.BadParameter(f"not a size: {text!r} (e.g. 1GB, 500MB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _print_plan(plan: Plan) -> None:
    table = Table("tensor", "shape", "dtype", "action", "outputs", "output MB", title="conversion plan")
    for tp in plan.tensors:
        outs = ", ".join(f"{n.rsplit('.', 1)[-1]} {list(s)} {str(d).removeprefix('torch.')}" for n, s, d in tp.outputs)
        table.add_row(tp.source.name, str(list(tp.source.shape)), str(tp.source.dtype).removeprefix("torch."),
                      tp.action, outs, f"{tp.out_bytes / 1e6:.2f}")
    console = Console()
    console.print(table)
    console.print(f"{len(plan.tensors)} tensors, {plan.in_bytes / 1e9:.3f} GB in -> {plan.out_bytes / 1e9:.3f} GB "
                  f"out in {len(plan.shards)} shard(s)"
                  + (f"; left unquantized by --ignore: {plan.not_converted}" if plan.not_converted else ""))


@click.command("convert")
@click.argument("src", type=click.Path(exists=True))
@click.argument("dst", type=click.Path())
@click.option("--scheme", default="fp8-block", show_default=True, help="quantization scheme, or 'none'")
@click.option("--block-size", default=None,
              help="weight block for block schemes, e.g. 128,128 (default: 128x128, or 64x64 where the model's "
                   "dimensions are not whole 128-blocks)")
@click.option("--scale-ue8m0", is_flag=True, help="round block scales up to powers of two")
@click.option("--group-size", default=None, type=click.IntRange(min=1),
              help="weight group along K for group schemes (awq, w4a16-rtn; default 128, or what divides K)")
@click.option("--format", "format_", default=None, type=click.Choice(["autoawq", "compressed-tensors"]),
              help="checkpoint layout of the awq schemes (default autoawq)")
@click.option("--calib", type=click.Path(exists=True, dir_okay=False), default=None,
              help="calibration text file (default: the second half of Python's pydoc topics)")
@click.option("--calib-samples", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--calib-seqlen", default=512, show_default=True, type=click.IntRange(min=2))
@click.option("--no-search", is_flag=True, help="awq: no scale search (round to nearest, as w4a16-rtn)")
@click.option("--no-clip", is_flag=True, help="awq: no clipping search")
@click.option("--no-smooth", is_flag=True, help="modelslim-*: no SmoothQuant smoothing before quantizing")
@click.option("--ignore", multiple=True, metavar="REGEX", help="modules to leave unquantized (repeatable)")
@click.option("--dtype", default="bf16", show_default=True, type=click.Choice(["bf16", "fp16", "fp32"]))
@click.option("--max-shard-size", default="500MB", show_default=True,
              help="bytes per output shard; memory use is about twice this")
@click.option("--resume", is_flag=True, help="continue an interrupted conversion from its finished shards")
@click.option("--overwrite", is_flag=True, help="replace DST if it exists")
@click.option("--dry-run", is_flag=True, help="print the plan and output size, write nothing")
@click.option("--allow-nonfinite", is_flag=True, help="keep NaN/Inf weights instead of failing")
@click.option("--device", default=None, help="where to quantize (default: cuda if available)")
def convert_cmd(src, dst, scheme, block_size, scale_ue8m0, group_size, format_, calib, calib_samples, calib_seqlen,
                no_search, no_clip, no_smooth, ignore, dtype, max_shard_size, resume, overwrite, dry_run,
                allow_nonfinite, device) -> None:
    """Convert SRC (an HF model directory or a .gguf file) into a quantized HF checkpoint at DST."""
    options = {}
    if block_size:
        try:
            options["block_size"] = tuple(int(v) for v in block_size.split(","))
        except ValueError:
            raise click.BadParameter(f"--block-size takes N,K, got {block_size!r}") from None
    if scale_ue8m0:
        options["scale_ue8m0"] = True
    if group_size is not None:
        options["group_size"] = group_size
    if format_ is not None:
        options["format"] = format_
    options |= {"search": False} if no_search else {}
    options |= {"clip": False} if no_clip else {}
    options |= {"smooth": False} if no_smooth else {}
    calibration = {"samples": calib_samples, "seqlen": calib_seqlen,
                   "text": Path(calib).read_text() if calib else None}
    try:
        result = convert(src, dst, scheme, scheme_options=options, ignore=ignore, dtype=dtype,
                         max_shard_size=parse_size(max_shard_size), resume=resume, overwrite=overwrite,
                         dry_run=dry_run, allow_nonfinite=allow_nonfinite, device=device, calibration=calibration)
    except (ConvertError, SchemeError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # the disk filled up, a file vanished mid-run: finished shards stay for --resume
        raise click.ClickException(f"{e.strerror or e}: {e.filename or dst} (finished shards are kept: rerun "
                                   "with --resume to continue)") from None
    if dry_run:
        _print_plan(result)
    else:
        click.echo(f"wrote {result}")
