"""The AWQ W4A16 schemes: ``awq`` (activation-aware scales and clipping from calibration), ``w4a16-rtn``
(round to nearest, the same format without calibration) and ``compressed-tensors`` (reading llm-compressor's
pack-quantized W4A16 checkpoints).

quantization_config written and read:
- AutoAWQ GEMM: ``{"quant_method": "awq", "bits": 4, "group_size": G, "zero_point": true, "version": "gemm",
  "modules_to_not_convert": [...]}`` (what vLLM, sglang and transformers read as AWQ).
- compressed-tensors (``--format compressed-tensors``): ``{"quant_method": "compressed-tensors", "format":
  "pack-quantized", "quantization_status": "compressed", "config_groups": {"group_0": {"targets": ["Linear"],
  "weights": {"num_bits": 4, "type": "int", "symmetric": false, "strategy": "group", "group_size": G, ...},
  "input_activations": null, "output_activations": null}}, "ignore": [...]}``.

Group size: 128 unless given; where it does not divide every quantized layer's K (SmolLM2's 576), conversion
falls back to the largest of 128, 64, 32 that does, logs it, and writes it into the config.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence

from kernelkit.quant.awq.format import fake_quantize, pack_autoawq, pack_compressed_tensors, quantize
from kernelkit.quant.awq.linear import AwqLinearMethod, PackedW4LinearMethod
from kernelkit.quant.awq.search import apply_clip, capture_inputs, fold_scales, search_clip, search_scales
from kernelkit.quant.scheme import QuantScheme

log = logging.getLogger("kernelkit.quant")

DEFAULT_GROUP_SIZE = 128
GROUP_SIZES = (128, 64, 32)
FORMATS = ("autoawq", "compressed-tensors")


class AwqScheme(QuantScheme):
    """AWQ W4A16 (Lin et al., MLSys 2024, arXiv 2306.00978): asymmetric 4-bit weights in groups along K.

    Args:
        group_size: G; None: 128, or the largest of ``GROUP_SIZES`` that divides the model (``fit``).
        format: ``autoawq`` (AutoAWQ GEMM tensors) or ``compressed-tensors`` (pack-quantized).
        search: search activation-aware scales on calibration data (False: round to nearest).
        clip: search clipping ranges on calibration data.

    Raises:
        ValueError: an unknown format or a group size that is not a positive integer.
    """

    name = "awq"
    quant_method = "awq"

    def __init__(self, group_size: int | None = None, format: str = "autoawq", search: bool = True,
                 clip: bool = True, modules_to_not_convert: Sequence[str] | None = None):
        super().__init__(modules_to_not_convert)
        if format not in FORMATS:
            raise ValueError(f"awq: format must be one of {list(FORMATS)}, got {format!r}")
        if group_size is not None and (not isinstance(group_size, int) or group_size <= 0):
            raise ValueError(f"awq: group_size must be a positive integer, got {group_size!r}")
        self.group_size_given = group_size is not None
        self.group_size = group_size or DEFAULT_GROUP_SIZE
        self.format, self.search, self.clip = format, search, clip

    @property
    def needs_calibration(self) -> bool:  # type: ignore[override]
        return self.search or self.clip

    @classmethod
    def from_config(cls, quantization_config: dict) -> AwqScheme:
        cfg = quantization_config
        if cfg.get("quant_method") != "awq" or cfg.get("bits", 4) != 4 or str(cfg.get("version", "gemm")).lower() \
                != "gemm" or not cfg.get("zero_point", True):
            raise ValueError(f"awq: only 4-bit GEMM checkpoints with zero points are supported, got {cfg}")
        return cls(int(cfg["group_size"]), "autoawq", False, False, cfg.get("modules_to_not_convert"))

    def to_config(self) -> dict:
        if self.format == "autoawq":
            return {"quant_method": "awq", "bits": 4, "group_size": self.group_size, "zero_point": True,
                    "version": "gemm", "modules_to_not_convert": self.modules_to_not_convert}
        weights = {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group",
                   "group_size": self.group_size, "dynamic": False, "actorder": None, "observer": "minmax"}
        return {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
                "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                              "output_activations": None}},
                "ignore": self.modules_to_not_convert}

    def fit(self, linear_shapes: Mapping[str, tuple[int, int]]) -> AwqScheme:
        """Keep a given group size; otherwise the largest of ``GROUP_SIZES`` that divides every K (logged).

        Raises:
            ValueError: a given group size, or every listed one, does not divide some layer's K.
        """
        misfit = next(((m, s) for m, s in linear_shapes.items() if s[1] % self.group_size), None)
        if misfit is None:
            return self
        if self.group_size_given:
            raise ValueError(f"awq: group size {self.group_size} does not divide {misfit[0]}'s input size "
                             f"K = {misfit[1][1]}; pick one that divides every layer's K")
        for g in GROUP_SIZES:
            if all(k % g == 0 for _, k in linear_shapes.values()):
                log.info("awq: group size %d does not divide %s %s; using group size %d (written into "
                         "quantization_config)", self.group_size, misfit[0], list(misfit[1]), g)
                fitted = copy.copy(self)
                fitted.group_size = g
                return fitted
        raise ValueError(f"awq: none of the group sizes {list(GROUP_SIZES)} divides {misfit[0]}'s input size "
                         f"K = {misfit[1][1]}")

    def calibrate_layer(self, layer, run, x):
        """AWQ on one Llama-family decoder layer: scales for (input_layernorm -> q/k/v), (v_proj -> o_proj, where
        their shapes allow it: not under GQA), (post_attention_layernorm -> gate/up), (up_proj -> down_proj),
        then clipping (q/k skipped), then the layer's linears fake-quantized in place. Returns the two norms' and
        seven linears' adapted float weights (the checkpoint quantizes those)."""
        attn, mlp = layer.self_attn, layer.mlp
        linears = {f"self_attn.{p}_proj": getattr(attn, f"{p}_proj") for p in "qkvo"} | \
            {f"mlp.{p}_proj": getattr(mlp, f"{p}_proj") for p in ("gate", "up", "down")}
        inputs = capture_inputs(layer, run, x, [linears["self_attn.q_proj"], linears["self_attn.o_proj"],
                                                 linears["mlp.gate_proj"], linears["mlp.down_proj"]])
        groups = [(layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj], inputs[0], attn),
                  (layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], inputs[2], mlp),
                  (mlp.up_proj, [mlp.down_proj], inputs[3], mlp.down_proj)]
        if attn.v_proj.weight.shape == attn.o_proj.weight.shape:
            groups.insert(1, (attn.v_proj, [attn.o_proj], inputs[1], attn.o_proj))
        feats = {id(attn.q_proj): inputs[0], id(attn.k_proj): inputs[0], id(attn.v_proj): inputs[0],
                 id(attn.o_proj): inputs[1], id(mlp.gate_proj): inputs[2], id(mlp.up_proj): inputs[2],
                 id(mlp.down_proj): inputs[3]}
        if self.search:
            for previous, lins, inp, parent in groups:
                s = search_scales(inp, lins, lambda inp=inp, parent=parent: run(parent, inp), self.group_size)
                fold_scales(previous, lins, s)
                for lin in lins:
                    feats[id(lin)] = feats[id(lin)] / s
        for name, lin in linears.items():
            if self.clip and not name.endswith(("q_proj", "k_proj")):
                apply_clip(lin, search_clip(feats[id(lin)], lin.weight.data, self.group_size), self.group_size)
        out = {f"{name}.weight": lin.weight.data.clone() for name, lin in linears.items()}
        out |= {f"{n}.weight": getattr(layer, n).weight.data.clone() for n in ("input_layernorm",
                                                                            "post_attention_layernorm")}
        for lin in linears.values():
            lin.weight.data = fake_quantize(lin.weight.data, self.group_size)
        return out

    def convert_linear(self, prefix, weight, bias):
        q, scales, zeros = quantize(weight, self.group_size)
        out = pack_autoawq(q, scales, zeros) if self.format == "autoawq" else \
            pack_compressed_tensors(q, scales, zeros, weight.dtype if weight.dtype.itemsize == 2 else None)
        if bias is not None:
            out["bias"] = bias
        return out

    def linear_method(self, prefix: str):
        if not self.quantizes(prefix):
            return None
        return (AwqLinearMethod if self.format == "autoawq" else PackedW4LinearMethod)(self.group_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(group_size={self.group_size}, format={self.format!r})"


class W4A16RtnScheme(AwqScheme):
    """``w4a16-rtn``: AWQ's format, weights rounded to nearest (no calibration): the baseline AWQ improves on."""

    name = "w4a16-rtn"

    def __init__(self, group_size: int | None = None, format: str = "autoawq",
                 modules_to_not_convert: Sequence[str] | None = None):
        super().__init__(group_size, format, False, False, modules_to_not_convert)


class CompressedTensorsScheme(AwqScheme):
    """``compressed-tensors``: reads pack-quantized W4A16 checkpoints (asymmetric int4 groups), as llm-compressor
    writes them; other compressed-tensors formats are refused by name."""

    name = "compressed-tensors"
    quant_method = "compressed-tensors"

    def __init__(self, group_size: int | None = None, search: bool = True, clip: bool = True,
                 modules_to_not_convert: Sequence[str] | None = None):
        super().__init__(group_size, "compressed-tensors", search, clip, modules_to_not_convert)

    @classmethod
    def from_config(cls, quantization_config: dict) -> AwqScheme:
        cfg = quantization_config
        if cfg.get("format") != "pack-quantized":
            raise ValueError(f"compressed-tensors: format {cfg.get('format')!r} is not supported (pack-quantized is)")
        groups = list((cfg.get("config_groups") or {}).values())
        if len(groups) != 1:
            raise ValueError(f"compressed-tensors: exactly one config group is supported, got {len(groups)}")
        w, inputs = groups[0].get("weights") or {}, groups[0].get("input_activations")
        if inputs or w.get("num_bits") != 4 or w.get("type") != "int" or w.get("strategy") != "group" \
                or w.get("symmetric", True):
            raise ValueError(f"compressed-tensors: only asymmetric int4 group weights with 16-bit activations "
                             f"(W4A16) are supported, got weights {w}, input_activations {inputs}")
        return cls(int(w["group_size"]), False, False, cfg.get("ignore"))
