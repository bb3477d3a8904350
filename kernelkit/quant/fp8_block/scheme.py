"""The ``fp8-block`` quantization scheme: DeepSeek-V3 block-FP8 weights, dynamic per-token-group activations.

quantization_config, as sglang, vLLM and transformers (FineGrainedFP8) read it:
``{"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128],
"modules_to_not_convert": [...]}`` plus ``"scale_fmt": "ue8m0"`` when scales are powers of two.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from kernelkit.quant.fp8_block.format import quantize_weight
from kernelkit.quant.fp8_block.linear import Fp8BlockLinear
from kernelkit.quant.scheme import QuantScheme


class Fp8BlockScheme(QuantScheme):
    """Block-FP8 weights (``weight``, ``weight_scale_inv``) with dynamic FP8 activations."""

    name = "fp8-block"
    quant_method = "fp8"

    def __init__(self, block_size: Sequence[int] = (128, 128), scale_ue8m0: bool = False,
                 modules_to_not_convert: Sequence[str] | None = None):
        super().__init__(modules_to_not_convert)
        if len(block_size) != 2 or min(block_size) <= 0:
            raise ValueError(f"fp8-block: weight_block_size must be two positive sizes, got {list(block_size)}")
        self.block_size = (int(block_size[0]), int(block_size[1]))
        self.scale_ue8m0 = scale_ue8m0

    @classmethod
    def from_config(cls, quantization_config: dict) -> Fp8BlockScheme:
        cfg = quantization_config
        if cfg.get("quant_method") != cls.quant_method or cfg.get("fmt", "e4m3") != "e4m3":
            raise ValueError(f"fp8-block: expected quant_method 'fp8' and fmt 'e4m3', got {cfg}")
        if "weight_block_size" not in cfg:
            raise ValueError("fp8-block: quantization_config has no weight_block_size (per-tensor FP8 is "
                             "another scheme)")
        if cfg.get("activation_scheme", "dynamic") != "dynamic":
            raise ValueError("fp8-block: static activation scales with block-wise weights are not supported "
                             "(sglang rejects this combination too); use activation_scheme 'dynamic'")
        if cfg.get("scale_fmt") not in (None, "ue8m0"):
            raise ValueError(f"fp8-block: unknown scale_fmt {cfg['scale_fmt']!r}")
        return cls(cfg["weight_block_size"], cfg.get("scale_fmt") == "ue8m0", cfg.get("modules_to_not_convert"))

    def to_config(self) -> dict:
        cfg = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
               "weight_block_size": list(self.block_size), "modules_to_not_convert": self.modules_to_not_convert}
        if self.scale_ue8m0:
            cfg["scale_fmt"] = "ue8m0"
        return cfg

    def convert_linear(self, prefix, weight, bias):
        q, scale = quantize_weight(weight, self.block_size, self.scale_ue8m0)
        out = {"weight": q, "weight_scale_inv": scale}
        if bias is not None:
            out["bias"] = bias
        return out

    def linear_from_float(self, linear: nn.Linear) -> nn.Module:
        return Fp8BlockLinear.from_float(linear, self.block_size, self.scale_ue8m0)

    def empty_linear(self, in_features, out_features, bias, dtype, device=None) -> nn.Module:
        return Fp8BlockLinear(in_features, out_features, bias, self.block_size, dtype, device)

    def __repr__(self) -> str:
        return f"Fp8BlockScheme(block_size={self.block_size}, scale_ue8m0={self.scale_ue8m0})"
