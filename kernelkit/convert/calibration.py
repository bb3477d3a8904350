"""Sequential calibration for schemes that need activations (AWQ), bounded by one decoder layer.

As llm-compressor's sequential pipeline: the calibration text is embedded once; the decoder layers run one at
a time through transformers' modeling code, each materialised from the source on its own (the rest of the
model stays on the meta device): the scheme adapts the layer to its calibration inputs
(``QuantScheme.calibrate_layer``), the adapted layer, as the checkpoint will compute, produces the next
layer's inputs, and the tensors the scheme changed (scaled norms, scaled and clipped weights) are spilled to
one safetensors file per layer. Conversion then reads those instead of the source's.

Memory: one layer, plus the calibration activations [samples, seqlen, hidden] (fp32).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from rich.progress import Progress

from kernelkit.convert.errors import ConvertError
from kernelkit.quant.scheme import QuantScheme

SAMPLES_PER_BATCH = 8  # calibration samples run through a layer at a time


def calibration_text() -> str:
    """The default calibration text: the second half of Python's pydoc topics (``kernelkit eval ppl`` scores
    the first 130 kB at most, so the two never overlap)."""
    from kernelkit.eval.ppl import default_text

    text = default_text()
    return text[text.index("\n\n", len(text) // 2) + 2:]


def calibration_ids(tokenizer, text: str, samples: int, seqlen: int) -> torch.Tensor:
    """int64 [samples, seqlen]: consecutive windows of the tokenized text. Raises ConvertError if it is short."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    if ids.numel() < samples * seqlen:
        raise ConvertError(f"the calibration text has {ids.numel()} tokens, fewer than --calib-samples {samples} x "
                           f"--calib-seqlen {seqlen}")
    return ids[: samples * seqlen].view(samples, seqlen)


class _Captured(Exception):
    def __init__(self, kwargs: dict):
        super().__init__("captured")
        self.kwargs = kwargs


class _Catcher(torch.nn.Module):
    """Stands in for the first decoder layer to capture the keyword arguments the model passes its layers
    (position embeddings, causal mask, ...), whatever the installed transformers version passes."""

    def forward(self, hidden_states, *args, **kwargs):
        raise _Captured(kwargs)


def _layer_kwargs(model, hidden: torch.Tensor) -> dict:
    layers = model.model.layers
    first, layers[0] = layers[0], _Catcher()
    try:
        model.model(inputs_embeds=hidden, use_cache=False)
    except _Captured as captured:
        return {k: v for k, v in captured.kwargs.items() if k not in ("cache", "past_key_values", "use_cache")}
    finally:
        layers[0] = first
    raise ConvertError("calibration could not capture the decoder layers' inputs")


def _output(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _runner(layer, kwargs: dict) -> Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]:
    """run(module, x [S, L, H]) in batches of samples: the layer and its attention module (``self_attn``) get
    the keyword arguments the model passes its layers; other modules take x alone."""
    attention = getattr(layer, "self_attn", None)

    def run(module, x):
        outs = []
        for start in range(0, x.shape[0], SAMPLES_PER_BATCH):
            xb = x[start:start + SAMPLES_PER_BATCH]
            if module is layer:
                outs.append(_output(module(xb, **kwargs)))
            elif module is attention:
                outs.append(_output(module(hidden_states=xb, **kwargs)))
            else:
                outs.append(module(xb))
        return torch.cat(outs)

    return run


def _stack_experts(state: dict[str, torch.Tensor], layer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint's per-expert tensors (``mlp.experts.{e}.{gate,up,down}_proj.weight``, as on the Hub) stacked
    into the fused expert parameters of transformers 5's MoE modules (``mlp.experts.gate_up_proj`` and
    ``mlp.experts.down_proj``, in the orientation the module has)."""
    params = dict(layer.named_parameters())
    if "mlp.experts.gate_up_proj" not in params or "mlp.experts.0.gate_proj.weight" not in state:
        return state
    state = dict(state)
    experts = params["mlp.experts.gate_up_proj"].shape[0]

    def take(part):
        return [state.pop(f"mlp.experts.{e}.{part}_proj.weight") for e in range(experts)]

    gate, up, down = take("gate"), take("up"), take("down")
    stacked = {"mlp.experts.gate_up_proj": torch.stack([torch.cat(gu) for gu in zip(gate, up, strict=True)]),
               "mlp.experts.down_proj": torch.stack(down)}
    for name, t in stacked.items():
        state[name] = t if t.shape == params[name].shape else t.transpose(1, 2).contiguous()
    return state


@torch.no_grad()
def calibrate(source, tensors: dict, scheme: QuantScheme, spill: Path, samples: int, seqlen: int,
              text: str | None, progress: bool) -> dict[str, Path]:
    """Run the scheme's calibration over every decoder layer; returns {tensor name: spill file} for the tensors
    it changed.

    Raises:
        ConvertError: an architecture the modeling code cannot run, a short calibration text, a layer whose
            tensors the source lacks.
    """
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    config = source.hf_config()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # real buffers, on the CPU
    ids = calibration_ids(source.tokenizer(), text or calibration_text(), samples, seqlen)
    hidden = torch.nn.functional.embedding(ids, tensors["model.embed_tokens.weight"].load().float())
    kwargs = _layer_kwargs(model, hidden[:1])
    spill.mkdir(parents=True, exist_ok=True)
    changed: dict[str, Path] = {}
    layers = model.model.layers
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"calibrating {scheme.name}", total=len(layers))
        for i in range(len(layers)):
            prefix = f"model.layers.{i}."
            layer = layers[i].to_empty(device="cpu")
            state = {name[len(prefix):]: t.load().float() for name, t in tensors.items() if name.startswith(prefix)}
            missing, unexpected = layer.load_state_dict(_stack_experts(state, layer), strict=False)
            if missing or unexpected:
                raise ConvertError(f"layer {i}: the source's tensors do not match the model: missing {missing}, "
                                   f"unexpected {unexpected}")
            out = scheme.calibrate_layer(layer, _runner(layer, kwargs), hidden)
            hidden = _runner(layer, kwargs)(layer, hidden)
            file = spill / f"layer-{i:05d}.safetensors"
            save_file({prefix + name: t.contiguous() for name, t in out.items()}, str(file))
            changed |= {prefix + name: file for name in out}
            layers[i] = layers[i].to("meta")
            bar.update(task, advance=1, description=f"calibrating {scheme.name}: layer {i + 1}/{len(layers)}")
    return changed
