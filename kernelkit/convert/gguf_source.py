"""A GGUF checkpoint as a conversion source (llama architecture).

Tensors are read one at a time from the memory-mapped file with the ``gguf`` package and dequantized with
``gguf.quants.dequantize`` (which yields HF orientation). Names map through ``gguf.get_tensor_name_map``;
llama.cpp stores q/k projections with rows permuted for its rotary layout, which we undo per head (as
transformers' GGUF loader does: llama.cpp convert_hf_to_gguf.py ``permute``). Config, tokenizer (with its
chat template) and generation defaults come from transformers' GGUF support.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from kernelkit.convert.errors import ConvertError
from kernelkit.convert.sources import SourceTensor

log = logging.getLogger("kernelkit.convert")

SUPPORTED_ARCHS = {"llama": "LlamaForCausalLM"}  # GGUF architecture -> HF architectures entry


def llama_module_names(config: dict) -> list[str]:
    """HF module names of a llama-family decoder, in checkpoint order."""
    names = ["model.embed_tokens"]
    for i in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{i}"
        names += [f"{prefix}.input_layernorm", f"{prefix}.post_attention_layernorm"]
        names += [f"{prefix}.self_attn.{p}_proj" for p in "qkvo"]
        names += [f"{prefix}.mlp.{p}_proj" for p in ("gate", "up", "down")]
    return names + ["model.norm", "lm_head"]


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head row permutation of a q or k projection [n_heads * head_dim, ...]."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GgufSource:
    """A .gguf file. Raises ConvertError for an unreadable file or an unsupported architecture."""

    def __init__(self, path: Path):
        from gguf import GGUFReader

        self.path = path
        try:
            self.reader = GGUFReader(str(path))
            arch = self.reader.fields["general.architecture"].contents()
        except Exception as e:  # gguf raises plain ValueError/KeyError for corrupt files
            raise ConvertError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e
        if arch not in SUPPORTED_ARCHS:
            raise ConvertError(f"{path}: GGUF architecture {arch!r} is not supported "
                               f"(supported: {sorted(SUPPORTED_ARCHS)})")
        self.arch = arch
        self.config = self._hf_config()
        self._names = self._gguf_to_hf()

    def _hf_config(self) -> dict:
        from transformers import AutoConfig

        self._hf_config_obj = AutoConfig.from_pretrained(self.path.parent, gguf_file=self.path.name)
        config = self._hf_config_obj.to_dict()
        config.pop("quantization_config", None)  # describes the GGUF source, not the output
        config.pop("_name_or_path", None)
        config["architectures"] = [SUPPORTED_ARCHS[self.arch]]  # sglang and vLLM pick the model class by it
        return config

    def _gguf_to_hf(self) -> dict[str, str]:
        import gguf

        arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == self.arch)
        name_map = gguf.get_tensor_name_map(arch, self.config["num_hidden_layers"])
        out = {}
        for hf in llama_module_names(self.config):
            gguf_name = name_map.get_name(hf)
            if gguf_name is not None:
                out[f"{gguf_name}.weight"] = f"{hf}.weight"
        return out

    def files(self) -> list[Path]:
        """The one file the conversion reads."""
        return [self.path]

    def tensors(self) -> Iterator[SourceTensor]:
        for t in self.reader.tensors:
            hf_name = self._names.get(t.name)
            if hf_name is None:
                log.info("skipping GGUF tensor %s (no HF counterpart)", t.name)
                continue
            shape = tuple(int(d) for d in reversed(t.shape))
            yield SourceTensor(hf_name, shape, torch.float32, str(self.path),
                               lambda a, b, t=t, n=hf_name, s=shape: self._load_rows(t, n, s, a, b))

    def _load_rows(self, t, hf_name: str, shape: tuple[int, ...], start: int, stop: int) -> torch.Tensor:
        """Rows of GGUF quantized types are independent blocks, so a row range dequantizes on its own; the
        q/k un-permutation mixes rows within a head, so those load whole and are sliced after."""
        from gguf.quants import dequantize

        heads = {"self_attn.q_proj.weight": "num_attention_heads", "self_attn.k_proj.weight": "num_key_value_heads"}
        permuted = next((key for suffix, key in heads.items() if hf_name.endswith(suffix)), None)
        if permuted is not None:
            w = unpermute_rotary(dequantize(t.data, t.tensor_type).reshape(shape), self.config[permuted])[start:stop]
        else:
            w = dequantize(t.data[start:stop], t.tensor_type).reshape(stop - start, *shape[1:])
        return torch.from_numpy(np.array(w, dtype=np.float32))  # a writable copy, not a view of the file

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path.parent, gguf_file=self.path.name)

    def hf_config(self):
        return self._hf_config_obj

    def copy_side_files(self, dst: Path) -> None:
        from transformers import AutoTokenizer, GenerationConfig

        AutoTokenizer.from_pretrained(self.path.parent, gguf_file=self.path.name).save_pretrained(dst)
        GenerationConfig.from_model_config(self._hf_config_obj).save_pretrained(dst)
