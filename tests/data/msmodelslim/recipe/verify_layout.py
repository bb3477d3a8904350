"""Sanity-check the layout: unpack W4A8 int4 (low nibble = even output row), check scale_bias formula, and
compare dequantized weights of un-smoothed linears with the bf16 source weights."""
import sys

import torch
from safetensors.torch import load_file


def unpack(p):  # p int8 [N/2, K] -> int8 [N, K]
    lo = (p << 4) >> 4          # sign-extended low nibble
    hi = p >> 4                 # arithmetic shift: sign-extended high nibble
    return torch.stack([lo, hi], dim=1).reshape(p.shape[0] * 2, p.shape[1])

def rel(a, b): return ((a - b).norm() / b.norm()).item()

root = sys.argv[1]
for name, src, checks in [
    ("qwen3-w8a8-dynamic", "src-qwen3", ["model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj"]),
    ("qwen3-w4a8-dynamic", "src-qwen3", ["model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj", "model.layers.0.self_attn.o_proj"]),
    ("qwen3moe-w8a8-dynamic", "src-qwen3moe", ["model.layers.0.mlp.experts.1.gate_proj", "model.layers.1.mlp.experts.3.down_proj"]),
    ("qwen3moe-w4a8-dynamic", "src-qwen3moe", ["model.layers.0.mlp.experts.1.gate_proj", "model.layers.1.mlp.experts.3.down_proj", "model.layers.0.self_attn.k_proj"]),
]:
    q = load_file(f"{root}/{name}/quant_model_weights-00001-of-00001.safetensors")
    s = load_file(f"{root}/{src}/model.safetensors")
    for p in checks:
        w, sc = q[p + ".weight"], q[p + ".weight_scale"]
        if p + ".scale_bias" in q:
            wi = unpack(w)
            rng = (wi.min().item(), wi.max().item())
            deq = wi.float() * sc
            sb = q[p + ".scale_bias"]
            if sb.shape[1] == 1:
                sb_ref = 8 * deq.sum(1, keepdim=True)
            else:
                sb_ref = 8 * deq.reshape(deq.shape[0], sb.shape[1], -1).sum(-1)
            extra = f"int4 range {rng} scale_bias max|diff| {(sb - sb_ref).abs().max().item():.2e}"
        else:
            deq = w.float() * sc
            extra = f"int8 range {(w.min().item(), w.max().item())}"
        ref = s[p + ".weight"].float()
        offs = q[p + ".weight_offset"].abs().max().item()
        print(f"{name:24s} {p:42s} rel_err_vs_src {rel(deq, ref):.4f} offset_max {offs} {extra}")
    for k in ["lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"] + ([ "model.layers.0.mlp.gate.weight"] if "moe" in name else []):
        print(f"{name:24s} {k:42s} equal_to_src {torch.equal(q[k], s[k if k in s else 'model.embed_tokens.weight'])} dtype {q[k].dtype}")
