"""``convert()``: the conversion pipeline, shard by shard with bounded memory.

Memory holds one output shard (at most ``max_shard_size`` bytes) plus the tensor being converted: tensors
are read one at a time from the memory-mapped source, quantized on the GPU when there is one, and each
finished shard is written through a temp file and recorded before the next begins.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from kernelkit.convert.checks import check_finite, check_not_quantized, check_shapes
from kernelkit.convert.errors import ConvertError
from kernelkit.convert.plan import Plan, TensorPlan, linear_shapes, make_plan
from kernelkit.convert.sources import identity, open_source
from kernelkit.convert.writer import PartialDir, check_destination
from kernelkit.jit.cache import atomic_write_text
from kernelkit.quant import resolve_scheme
from kernelkit.quant.scheme import QuantScheme

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _scheme(name: str | QuantScheme, options: dict) -> QuantScheme | None:
    if name == "none":
        return None
    try:
        scheme = resolve_scheme(name, **options)
    except TypeError as e:
        raise ConvertError(f"scheme {name!r} does not take these options {sorted(options)}: {e}") from e
    except ValueError as e:
        raise ConvertError(str(e)) from e
    return scheme


CHUNK_BYTES = 64 << 20  # rows read at a time when a tensor is only cast or copied


def _override(name: str, file: Path) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        return handle.get_tensor(name)


def _convert_tensor(tp: TensorPlan, scheme: QuantScheme | None, dtype: torch.dtype, device: torch.device,
                    allow_nonfinite: bool, overrides: dict[str, Path]) -> dict[str, torch.Tensor]:
    src = tp.source
    if src.name in overrides:  # calibration changed it (AWQ: scaled norms, scaled and clipped linears)
        data = _override(src.name, overrides[src.name])
        if tp.action != "quantize":
            return {src.name: data.to(dtype)}
    elif tp.action == "quantize":
        data = src.load()
    if tp.action == "quantize":  # schemes convert whole layers; linear weights are the smaller tensors
        if not allow_nonfinite:
            check_finite(src, data)
        module = src.name[: -len(".weight")]
        out = scheme.convert_linear(module, data.to(device=device, dtype=dtype), None)
        return {f"{module}.{suffix}": t.cpu() for suffix, t in out.items()}
    # Cast or copy row chunks into the output: embeddings and lm_head can be GBs.
    out = torch.empty(src.shape, dtype=dtype if tp.action == "cast" else src.dtype)
    step = max(1, CHUNK_BYTES // max(1, src.nbytes // src.rows))
    for start in range(0, src.rows, step):
        chunk = src.load_rows(start, min(start + step, src.rows))
        if not allow_nonfinite:
            check_finite(src, chunk, start)
        if out.dim():
            out[start:start + chunk.shape[0]] = chunk
        else:
            out.copy_(chunk)
    return {src.name: out}


def _write_config(source_config: dict, scheme: QuantScheme | None, dtype: torch.dtype, dst: Path) -> None:
    config = dict(source_config)
    name = str(dtype).removeprefix("torch.")
    config["torch_dtype"] = config["dtype"] = name
    if scheme is not None and scheme.description_file is None:  # the others describe themselves in their file
        config["quantization_config"] = scheme.to_config()
    atomic_write_text(dst / "config.json", json.dumps(config, indent=2, sort_keys=True))


def _write_index(plan: Plan, dst: Path) -> None:
    weight_map = {name: plan.shard_name(i) for i, shard in enumerate(plan.shards)
                  for j in shard for name, _, _ in plan.tensors[j].outputs}
    index = {"metadata": {"total_size": plan.out_bytes}, "weight_map": dict(sorted(weight_map.items()))}
    atomic_write_text(dst / plan.index_name, json.dumps(index, indent=2))


def convert(src: str | Path, dst: str | Path, scheme: str | QuantScheme = "fp8-block", *,
            scheme_options: dict | None = None, ignore: Sequence[str] = (), dtype: str = "bf16",
            max_shard_size: int = 500_000_000, resume: bool = False, overwrite: bool = False, dry_run: bool = False,
            allow_nonfinite: bool = False, device: str | None = None, progress: bool = True,
            calibration: dict | None = None) -> Plan | Path:
    """Convert an HF model directory or a GGUF file into an HF-format safetensors checkpoint.

    Args:
        src: an HF model directory (config.json + model.safetensors or a sharded index) or a ``.gguf`` file
            (llama architecture; dequantized with the ``gguf`` package).
        dst: output directory, created by renaming a finished ``.<dst>.partial`` directory.
        scheme: a registered quantization scheme's name (``kernelkit.quant.list_schemes()``), a QuantScheme
            instance, or ``"none"``.
        scheme_options: constructor options of the scheme, e.g. ``{"block_size": (128, 128)}``.
        ignore: regexes of module names (e.g. ``mlp\\.down_proj``) to leave unquantized; they are written into
            ``modules_to_not_convert``.
        dtype: ``bf16``, ``fp16`` or ``fp32`` for every tensor that is not quantized.
        max_shard_size: bytes per output shard. Memory holds about twice this (safetensors serializes a shard
            in memory), plus the tensor being converted.
        resume: continue an interrupted conversion of the same plan from its finished shards.
        overwrite: replace an existing ``dst``.
        dry_run: only plan; returns the Plan.
        allow_nonfinite: keep NaN/Inf weights instead of failing.
        device: where tensors are quantized (default: cuda if available, else cpu).
        progress: show a progress bar with bytes and tensors.
        calibration: for schemes that need activations (``awq``): ``samples`` (default 16) and ``seqlen``
            (default 512) tokens of ``text`` (default: ``calibration.calibration_text()``).

    Returns:
        The Plan when ``dry_run``, else the output directory.

    Raises:
        ConvertError: a corrupt or truncated source file, a missing shard, a shape that disagrees with
            config.json, NaN/Inf weights, an already-quantized input, an unsupported GGUF architecture, an
            existing ``dst`` without ``overwrite``, bad scheme options, or a scheme that needs calibration.
            Nothing is written to ``dst`` then.
        SchemeError: unknown or broken scheme.
    """
    src, dst = Path(src), Path(dst)
    if dtype not in DTYPES:
        raise ConvertError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if not dry_run:
        check_destination(src, dst, overwrite)
    out_dtype = DTYPES[dtype]
    source = open_source(src)
    tensors = list(source.tensors())
    check_not_quantized(source.config, tensors)
    check_shapes(source.config, tensors)
    patterns = _patterns(ignore)
    options = dict(scheme_options or {})
    quant = _scheme(scheme, options)
    if quant is not None:
        try:
            quant = quant.fit(linear_shapes(tensors, quant, patterns))
        except ValueError as e:
            raise ConvertError(str(e)) from e
    plan = make_plan(tensors, quant, out_dtype, patterns, max_shard_size)
    if quant is not None and plan.not_converted:
        quant = copy.copy(quant)  # the caller's scheme object stays as it was
        quant.modules_to_not_convert = [*quant.modules_to_not_convert, *plan.not_converted]
    if dry_run:
        return plan
    run_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    digest = plan.digest({"scheme": scheme if isinstance(scheme, str) else repr(scheme), "options": options,
                          "calibration": calibration,
                          "config": quant.to_config() if quant is not None else None, "ignore": list(ignore),
                          "dtype": dtype, "src": str(src.resolve())})
    partial = PartialDir(dst, digest, identity(source.files()), resume)
    try:
        overrides = _calibrate(source, tensors, quant, partial, calibration or {}, progress)
        _write_shards(plan, partial, quant, out_dtype, run_device, allow_nonfinite, progress, overrides)
    except ConvertError:
        partial.discard()  # bad input: nothing to resume
        raise
    if len(plan.shards) > 1:
        _write_index(plan, partial.path)
    _write_config(source.config, quant, out_dtype, partial.path)
    outputs = {name: tp.action == "quantize" for tp in plan.tensors for name, _, _ in tp.outputs}
    for name, text in (quant.extra_files(outputs) if quant is not None else {}).items():
        atomic_write_text(partial.path / name, text)
    source.copy_side_files(partial.path)
    shutil.rmtree(partial.path / ".calibration", ignore_errors=True)
    return partial.publish(overwrite)


CALIBRATION_DEFAULTS = {"samples": 16, "seqlen": 512, "text": None}


def _calibrate(source, tensors, scheme, partial: PartialDir, options: dict, progress: bool) -> dict[str, Path]:
    """{tensor name: spill file} of what the scheme's calibration changed (nothing for schemes without)."""
    if scheme is None or not scheme.needs_calibration:
        return {}
    from kernelkit.convert.calibration import calibrate

    unknown = set(options) - set(CALIBRATION_DEFAULTS)
    if unknown:
        raise ConvertError(f"unknown calibration options {sorted(unknown)}")
    opts = CALIBRATION_DEFAULTS | options
    return calibrate(source, {t.name: t for t in tensors}, scheme, partial.path / ".calibration", opts["samples"],
                     opts["seqlen"], opts["text"], progress)


def _patterns(ignore: Sequence[str]) -> list[re.Pattern]:
    try:
        return [re.compile(p) for p in ignore]
    except re.error as e:
        raise ConvertError(f"--ignore {e.pattern!r} is not a regular expression: {e}") from e


def _write_shards(plan: Plan, partial: PartialDir, scheme: QuantScheme | None, dtype: torch.dtype,
                  device: torch.device, allow_nonfinite: bool, progress: bool, overrides: dict[str, Path]) -> None:
    from safetensors.torch import save_file

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    total = len(plan.tensors)
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("converting", total=plan.in_bytes)
        done = 0
        for i, shard in enumerate(plan.shards):
            name = plan.shard_name(i)
            if name in partial.done:
                done += len(shard)
                bar.update(task, advance=sum(plan.tensors[j].source.nbytes for j in shard),
                           description=f"tensors {done}/{total} (shard {i + 1} already done)")
                continue
            tensors: dict[str, torch.Tensor] = {}
            for j in shard:
                tensors.update(_convert_tensor(plan.tensors[j], scheme, dtype, device, allow_nonfinite, overrides))
                done += 1
                bar.update(task, advance=plan.tensors[j].source.nbytes, description=f"tensors {done}/{total}")
            tmp = partial.path / f".{name}.tmp"
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            partial.commit_shard(tmp, name)
