"""msModelSlim ("ascendv1") checkpoints on NVIDIA GPUs: the ``modelslim`` scheme, read from the checkpoint's
``quant_model_description.json`` (msModelSlim writes no ``quantization_config``).

The description maps every tensor name to its type (``W8A8_DYNAMIC``, ``FLOAT``, ...) beside the top-level keys
``version``, ``model_quant_type``, ``metadata``, ``group_size`` and ``optional`` (msModelSlim's
``AscendV1Saver``). A linear module's type is its ``<prefix>.weight`` entry, as vllm-ascend's
``get_linear_quant_type`` and sglang's ``get_linear_scheme`` look it up; the parts of a merged q/k/v or gate/up
layer must agree. Here ``W8A8_DYNAMIC`` (per-channel int8 weights) and per-channel ``W4A8_DYNAMIC`` (int4
weights) run, dense and MoE, both against per-token dynamic int8 activations; ``FLOAT`` and unlisted modules
stay unquantized; any other type, and per-group W4A8 (``weight_scale_second``), is refused by name.

Writing (``modelslim-w8a8-dynamic``, ``modelslim-w4a8-dynamic``) follows msModelSlim's v1 saver: every tensor
listed (a quantized layer's ``weight``, ``weight_scale``, ``weight_offset`` and ``scale_bias`` with its type,
biases and the rest FLOAT), ``version`` 1.0.0, ``group_size`` 0, and ``model_quant_type`` as that saver picks
it: W4A8_DYNAMIC is never the model's type, so a W4A8-only model reports FLOAT.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from kernelkit.quant.awq.search import capture_inputs, fold_scales
from kernelkit.quant.modelslim.format import ROW_PARALLEL, quantize_weight, quantize_weight_w4a8
from kernelkit.quant.modelslim.linear import W4A8DynamicLinearMethod, W8A8DynamicLinearMethod
from kernelkit.quant.modelslim.moe import W4A8DynamicMoEMethod, W8A8DynamicMoEMethod
from kernelkit.quant.modelslim.smooth import smooth_scales
from kernelkit.quant.scheme import QuantScheme

DESCRIPTION_FILE = "quant_model_description.json"
TOP_LEVEL_KEYS = ("version", "model_quant_type", "metadata", "group_size", "optional", "kv_cache_type",
                  "kv_quant_type", "fa_quant_type", "packed_modules_mapping")
RUNNABLE = {"W8A8_DYNAMIC", "W4A8_DYNAMIC", "FLOAT"}
KNOWN = RUNNABLE | {"W8A8", "W8A8_MIX", "W8A16", "W4A16", "W16A16S", "C8"}


class ModelSlimScheme(QuantScheme):
    """A msModelSlim checkpoint's per-tensor quantization types (``description``: the parsed JSON; ``types``:
    tensor name -> type, every entry but the top-level keys)."""

    name = "modelslim"
    quant_method = "modelslim"
    description_file = DESCRIPTION_FILE
    file_stem = "quant_model_weights"
    write_type: ClassVar[str | None] = None  # the type ``kernelkit convert`` writes (the subclasses below)

    def __init__(self, description: dict | None = None, modules_to_not_convert: list[str] | None = None,
                 smooth: bool = True):
        """Raises ValueError without a description for the reading scheme ``modelslim`` (convert writes with
        ``modelslim-w8a8-dynamic`` or ``modelslim-w4a8-dynamic``), or naming the first tensor whose type is
        unknown or not runnable here."""
        super().__init__(modules_to_not_convert)
        if description is None and self.write_type is None:
            raise ValueError(f"modelslim reads msModelSlim checkpoints (their {DESCRIPTION_FILE}); to write one, "
                             "use the scheme modelslim-w8a8-dynamic or modelslim-w4a8-dynamic")
        self.description, self.smooth = description, smooth
        self.types = {k: v for k, v in (description or {}).items() if k not in TOP_LEVEL_KEYS}
        for tensor, kind in self.types.items():
            if kind not in KNOWN:
                raise ValueError(f"modelslim: unknown type {kind!r} of tensor {tensor!r} in {DESCRIPTION_FILE}")
            if kind not in RUNNABLE:
                raise ValueError(f"modelslim: tensor {tensor!r} is {kind}, which kernelkit does not run yet "
                                 f"(supported: {sorted(RUNNABLE)})")
            if tensor.endswith(".weight_scale_second"):
                raise ValueError(f"modelslim: tensor {tensor!r}: per-group W4A8_DYNAMIC (group_size "
                                 f"{(description or {}).get('group_size')}) is not supported, only per-channel")
        self.packed_int4 = (description or {}).get("version", "1.0.0") == "1.0.0"

    @classmethod
    def config_from_checkpoint(cls, path: Path) -> dict:
        """The quantization_config kernelkit uses for the msModelSlim checkpoint at ``path``: its description.
        Raises ValueError for a description that is not a JSON object (naming the file)."""
        try:
            description = json.loads((path / DESCRIPTION_FILE).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"modelslim: {path / DESCRIPTION_FILE} is not valid JSON: {e}") from e
        if not isinstance(description, dict):
            raise ValueError(f"modelslim: {path / DESCRIPTION_FILE} is not a JSON object")
        return {"quant_method": cls.quant_method, "quant_model_description": description}

    @classmethod
    def from_config(cls, quantization_config: dict) -> ModelSlimScheme:
        if quantization_config.get("quant_method") != cls.quant_method or not isinstance(
                quantization_config.get("quant_model_description"), dict):
            raise ValueError(f"modelslim: expected quant_method 'modelslim' with a quant_model_description "
                             f"(read from {DESCRIPTION_FILE}), got keys {sorted(quantization_config)}")
        return cls(quantization_config["quant_model_description"])

    def to_config(self) -> dict:
        if self.description is None:  # writing: the options (the checkpoint gets its description file)
            return {"quant_method": self.quant_method, "write_type": self.write_type, "smooth": self.smooth,
                    "modules_to_not_convert": self.modules_to_not_convert}
        return {"quant_method": self.quant_method, "quant_model_description": self.description}

    def type_of(self, module_name: str) -> str:
        """The quantization type of a linear module: its ``.weight`` entry in the description (FLOAT when
        unlisted); when writing, ``write_type`` for the modules it quantizes."""
        if self.description is None:
            return self.write_type if super().quantizes(module_name) else "FLOAT"
        return self.types.get(f"{module_name}.weight", "FLOAT")

    def quantizes(self, module_name: str) -> bool:
        return self.type_of(module_name) != "FLOAT"

    @property
    def needs_calibration(self) -> bool:
        """Writing W8A8_DYNAMIC smooths activation outliers first (SmoothQuant, ``smooth.py``) unless
        ``smooth=False``."""
        return self.description is None and self.smooth

    def calibrate_layer(self, layer, run, x):
        """SmoothQuant on one decoder layer: (input_layernorm -> q/k/v), (v_proj -> o_proj where the shapes
        allow it: not under GQA), and for a dense MLP (post_attention_layernorm -> gate/up), (up_proj ->
        down_proj); MoE blocks keep their MLP as it is (the router shares the norm's output). Returns the
        changed norms' and linears' float weights."""
        attn, mlp = layer.self_attn, layer.mlp
        dense = hasattr(mlp, "gate_proj")
        watched = [attn.q_proj, attn.o_proj] + ([mlp.gate_proj, mlp.down_proj] if dense else [])
        inputs = capture_inputs(layer, run, x, watched)
        groups = [("input_layernorm", layer.input_layernorm, ["q_proj", "k_proj", "v_proj"], attn, inputs[0])]
        if attn.v_proj.weight.shape == attn.o_proj.weight.shape:
            groups.append(("self_attn.v_proj", attn.v_proj, ["o_proj"], attn, inputs[1]))
        if dense:
            groups += [("post_attention_layernorm", layer.post_attention_layernorm, ["gate_proj", "up_proj"], mlp,
                        inputs[2]), ("mlp.up_proj", mlp.up_proj, ["down_proj"], mlp, inputs[3])]
        out = {}
        for previous_name, previous, names, parent, inp in groups:
            lins = [getattr(parent, n) for n in names]
            fold_scales(previous, lins, smooth_scales(inp, lins, 4 if self.write_type == "W4A8_DYNAMIC" else 8))
            out[f"{previous_name}.weight"] = previous.weight.data.clone()
            parent_name = "self_attn" if parent is attn else "mlp"
            out |= {f"{parent_name}.{n}.weight": lin.weight.data.clone() for n, lin in zip(names, lins, strict=True)}
        return out

    def convert_linear(self, prefix, weight, bias):
        if self.type_of(prefix) == "W4A8_DYNAMIC":
            out = quantize_weight_w4a8(weight, prefix.rsplit(".", 1)[-1] in ROW_PARALLEL)
        else:
            out = quantize_weight(weight)
        if bias is not None:
            out["bias"] = bias.float()
        return out

    def extra_files(self, outputs):
        """``quant_model_description.json`` as msModelSlim's AscendV1 saver writes it: the top-level keys, then
        every tensor of the checkpoint with its type (a quantized layer's tensors get the layer's type, its bias
        FLOAT)."""
        types = {name: self.write_type if quantized and not name.endswith(".bias") else "FLOAT"
                 for name, quantized in outputs.items()}
        head = {"version": "1.0.0", "model_quant_type": model_quant_type(set(types.values())), "metadata": {},
                "group_size": 0, "optional": {}}
        return {DESCRIPTION_FILE: json.dumps({**head, **types}, indent=2)}

    def linear_method(self, prefix: str) -> W8A8DynamicLinearMethod | None:
        kind = self.type_of(prefix)
        if kind == "W4A8_DYNAMIC":
            return W4A8DynamicLinearMethod(packed=self.packed_int4)
        return W8A8DynamicLinearMethod() if kind == "W8A8_DYNAMIC" else None

    def moe_method(self, prefix: str) -> W8A8DynamicMoEMethod | None:
        """The experts' method from their ``experts.{e}.*_proj.weight`` entries, which must share one type.
        Raises ValueError naming the layer when they do not, or for unpacked (pre-1.0.0) W4A8 experts."""
        if self.description is None:
            kinds = {self.type_of(prefix)}
        else:
            kinds = {kind for name, kind in self.types.items()
                     if name.startswith(f"{prefix}.") and name.endswith("_proj.weight")}
        if len(kinds) > 1:
            raise ValueError(f"modelslim: the experts of {prefix} have several types {sorted(kinds)}; one FusedMoE "
                             "layer takes one")
        if kinds == {"W4A8_DYNAMIC"}:
            if not self.packed_int4:
                raise ValueError(f"modelslim: {prefix}: W4A8_DYNAMIC experts of description version "
                                 f"{self.description.get('version')!r} (one int4 per byte) are not supported; "
                                 "version 1.0.0 (packed) is")
            return W4A8DynamicMoEMethod()
        return W8A8DynamicMoEMethod() if kinds == {"W8A8_DYNAMIC"} else None

    def __repr__(self) -> str:
        if self.description is None:
            return f"{type(self).__name__}(write_type={self.write_type!r})"
        types = sorted(set(self.types.values()))
        return f"ModelSlimScheme(version={self.description.get('version')!r}, types={types})"


def model_quant_type(types: set[str]) -> str:
    """msModelSlim's ``model_quant_type`` for a model of the two types kernelkit writes: W8A8_DYNAMIC if any
    tensor is, else FLOAT (its saver hides W4A8_DYNAMIC from the model type, mixed or alone)."""
    return "W8A8_DYNAMIC" if "W8A8_DYNAMIC" in types else "FLOAT"


class ModelSlimW8A8DynamicScheme(ModelSlimScheme):
    """``kernelkit convert --scheme modelslim-w8a8-dynamic``: every linear layer but lm_head (and MoE routers)
    as W8A8_DYNAMIC, after SmoothQuant smoothing."""

    name = "modelslim-w8a8-dynamic"
    write_type = "W8A8_DYNAMIC"


class ModelSlimW4A8DynamicScheme(ModelSlimScheme):
    """``kernelkit convert --scheme modelslim-w4a8-dynamic``: every linear layer but lm_head (and MoE routers)
    as per-channel W4A8_DYNAMIC, rounded to nearest. Smoothing is off by default: on SmolLM2 it raised the
    perplexity (32.56 against 31.33, benches/RESULTS.md) although it lowered each group's measured error."""

    name = "modelslim-w4a8-dynamic"
    write_type = "W4A8_DYNAMIC"

    def __init__(self, description: dict | None = None, modules_to_not_convert: list[str] | None = None,
                 smooth: bool = False):
        super().__init__(description, modules_to_not_convert, smooth)
