"""Weight-only dequantize each quantized checkpoint back into its HF model class and compare logits with the
bf16 source model (activation quantization is not simulated). Confirms the unpacking/scale conventions and that
smoothing was folded correctly into the float norms / weights."""
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def unpack(p):
    lo = (p << 4) >> 4; hi = p >> 4
    return torch.stack([lo, hi], dim=1).reshape(p.shape[0] * 2, p.shape[1])

root = sys.argv[1]
for name, src in [("qwen3-w8a8-dynamic", "src-qwen3"), ("qwen3-w4a8-dynamic", "src-qwen3"),
                  ("qwen3moe-w8a8-dynamic", "src-qwen3moe"), ("qwen3moe-w4a8-dynamic", "src-qwen3moe")]:
    ref = AutoModelForCausalLM.from_pretrained(f"{root}/{src}", dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(f"{root}/{src}")
    desc = json.load(open(f"{root}/{name}/quant_model_description.json"))
    q = load_file(f"{root}/{name}/quant_model_weights-00001-of-00001.safetensors")
    sd = {}
    for k, v in q.items():
        if k.endswith(".weight") and desc[k] in ("W8A8_DYNAMIC", "W4A8_DYNAMIC"):
            base = k[:-len(".weight")]
            w = unpack(v) if desc[k] == "W4A8_DYNAMIC" else v
            sd[k] = w.float() * q[base + ".weight_scale"]
        elif desc[k] == "FLOAT":
            sd[k] = v.float()
    m = AutoModelForCausalLM.from_pretrained(f"{root}/{src}", dtype=torch.float32)
    missing, unexpected = m.load_state_dict(sd, strict=False)
    ids = tok("The quick brown fox jumps over the lazy dog. Once upon a time there was a robot.", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = ref(ids).logits, m(ids).logits
    cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
    top1 = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    print(f"{name:24s} missing={missing} unexpected={unexpected} logits cos={cos:.5f} top1-agree={top1:.3f}")
