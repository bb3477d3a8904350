"""The ``fp8-block`` quantization scheme: DeepSeek-V3 block-FP8 weights, dynamic per-token-group activations.

quantization_config, as sglang, vLLM and transformers (FineGrainedFP8) read it:
``{"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128],
"modules_to_not_convert": [...]}`` plus ``"scale_fmt": "ue8m0"`` when scales are powers of two.

Block size: transformers refuses weights whose dimensions are not whole blocks, and vLLM and sglang refuse
merged q/k/v or gate/up parts that are not (vLLM ``validate_fp8_block_shape``). So unless a block size is
given, conversion uses 128 x 128 where every quantized layer's [N, K] is a multiple of 128, else 64 x 64
where that divides them all (SmolLM2: hidden 576 = 4.5 x 128); a block size given explicitly is kept, with a
warning naming a layer the peers will refuse.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from kernelkit.quant.fp8_block.format import quantize_weight
from kernelkit.quant.fp8_block.linear import Fp8BlockLinearMethod
from kernelkit.quant.scheme import QuantScheme

log = logging.getLogger("kernelkit.quant")

DEFAULT_BLOCK_SIZE = (128, 128)
FITTED_BLOCK_SIZES = (128, 64)  # square blocks conversion may pick, largest first (kernels exist for both)


class Fp8BlockScheme(QuantScheme):
    """Block-FP8 weights (``weight``, ``weight_scale_inv``) with dynamic FP8 activations."""

    name = "fp8-block"
    quant_method = "fp8"

    def __init__(self, block_size: Sequence[int] | None = None, scale_ue8m0: bool = False,
                 modules_to_not_convert: Sequence[str] | None = None):
        """``block_size`` [block_n, block_k]; None: 128 x 128, which :meth:`fit` may shrink for conversion.

        Raises:
            ValueError: a block size that is not two positive integers.
        """
        super().__init__(modules_to_not_convert)
        self.block_size_given = block_size is not None
        block_size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
        if (isinstance(block_size, str | bytes) or len(block_size) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block_size)):
            raise ValueError(f"fp8-block: weight_block_size must be two positive integers [block_n, block_k], "
                             f"got {list(block_size) if not isinstance(block_size, str) else block_size!r}")
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
        return cls(list(cfg["weight_block_size"]), cfg.get("scale_fmt") == "ue8m0", cfg.get("modules_to_not_convert"))

    def to_config(self) -> dict:
        cfg = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
               "weight_block_size": list(self.block_size), "modules_to_not_convert": self.modules_to_not_convert}
        if self.scale_ue8m0:
            cfg["scale_fmt"] = "ue8m0"
        return cfg

    def fit(self, linear_shapes: Mapping[str, tuple[int, int]]) -> Fp8BlockScheme:
        """The scheme to convert layers of these [N, K] shapes with (see the module docstring)."""
        bn, bk = self.block_size
        misfit = next(((m, s) for m, s in linear_shapes.items() if s[0] % bn or s[1] % bk), None)
        if misfit is None:
            return self
        peers = ("transformers refuses weights that are not whole blocks, vLLM and sglang merged q/k/v or gate/up "
                 "parts that are not")
        if self.block_size_given:
            log.warning("fp8-block: %dx%d blocks do not divide %s %s: %s", bn, bk, misfit[0], list(misfit[1]), peers)
            return self
        for b in FITTED_BLOCK_SIZES:
            if all(n % b == 0 and k % b == 0 for n, k in linear_shapes.values()):
                log.info("fp8-block: %dx%d blocks do not divide %s %s (%s); using %dx%d blocks, which divide every "
                         "quantized layer", bn, bk, misfit[0], list(misfit[1]), peers, b, b)
                return type(self)((b, b), self.scale_ue8m0, self.modules_to_not_convert)
        log.warning("fp8-block: no block size of %s divides %s %s; keeping %dx%d: %s", list(FITTED_BLOCK_SIZES),
                    misfit[0], list(misfit[1]), bn, bk, peers)
        return self

    def convert_linear(self, prefix, weight, bias):
        q, scale = quantize_weight(weight, self.block_size, self.scale_ue8m0)
        out = {"weight": q, "weight_scale_inv": scale}
        if bias is not None:
            out["bias"] = bias
        return out

    def linear_method(self, prefix: str) -> Fp8BlockLinearMethod | None:
        return Fp8BlockLinearMethod(self.block_size) if self.quantizes(prefix) else None

    def __repr__(self) -> str:
        return f"Fp8BlockScheme(block_size={self.block_size}, scale_ue8m0={self.scale_ue8m0})"
