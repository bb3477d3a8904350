"""``kernelkit convert``: stream an HF or GGUF checkpoint into a (quantized) safetensors checkpoint."""

from kernelkit.convert.errors import ConvertError
from kernelkit.convert.run import convert

__all__ = ["ConvertError", "convert"]
