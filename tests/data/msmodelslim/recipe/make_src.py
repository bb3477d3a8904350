"""Build the two random-weight tiny source models (Qwen3 dense and Qwen3-MoE) with a small offline tokenizer."""
import os
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

OUT = sys.argv[1] if len(sys.argv) > 1 else "/work/msms-out"
HERE = os.path.dirname(os.path.abspath(__file__))

def build_tokenizer():
    import json
    texts = [json.loads(l)["inputs_pretokenized"] for l in open(os.path.join(HERE, "calib.jsonl"))]
    texts += ["Hello world, this is a tiny tokenizer for a tiny random model.",
              "The quick brown fox jumps over the lazy dog 0123456789."]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, min_frequency=1,
                                  special_tokens=["<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", bos_token=None, model_max_length=4096)

COMMON = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=32, vocab_size=512, tie_word_embeddings=True,
              max_position_embeddings=4096, bos_token_id=0, eos_token_id=0, pad_token_id=0,
              torch_dtype="bfloat16")

def main():
    tok = build_tokenizer()
    assert len(tok) <= 512, len(tok)
    torch.manual_seed(0)
    m = Qwen3ForCausalLM(Qwen3Config(**COMMON)).to(torch.bfloat16)
    d = os.path.join(OUT, "src-qwen3"); m.save_pretrained(d, safe_serialization=True); tok.save_pretrained(d)
    torch.manual_seed(0)
    m = Qwen3MoeForCausalLM(Qwen3MoeConfig(**COMMON, num_experts=4, num_experts_per_tok=2,
                                           moe_intermediate_size=64, decoder_sparse_step=1,
                                           mlp_only_layers=[], norm_topk_prob=True)).to(torch.bfloat16)
    d = os.path.join(OUT, "src-qwen3moe"); m.save_pretrained(d, safe_serialization=True); tok.save_pretrained(d)
    print("tokenizer size", len(tok))

if __name__ == "__main__":
    main()
