"""lm-evaluation-harness's ``local-completions`` model (how people measure a served model's accuracy) against
``kernelkit serve``, unchanged: a multiple-choice task (loglikelihoods through ``echo``, prompt logprobs and
``max_tokens`` 1, token-id prompts batched four to a request) and a generate_until task, both on local files
(HF_DATASETS_OFFLINE=1). Its loglikelihoods must equal transformers' own on the same tokens, its generations
kernelkit's offline engine's."""

import json
import math
import os

import pytest
import torch
from serve_process import start_server
from tiny_llama import write_tiny_model

pytestmark = pytest.mark.slow
lm_eval = pytest.importorskip("lm_eval")

MC = [("the quick brown", ["fox", "dog", "world"]), ("hello", ["world", "tokens", "lazy"]),
      ("the lazy", ["dog", "fox", "blocks"]), ("jumps over the", ["lazy dog", "quick fox"]),
      ("tokens and", ["blocks", "world"]), ("hello world,", ["tokens", "fox"])]
GEN = [("the quick brown fox", "jumps"), ("hello world,", "tokens"), ("the lazy", "dog"), ("over the", "lazy")]


def _tasks(root):
    with open(root / "mc.jsonl", "w") as f:
        f.writelines(json.dumps({"question": q, "choices": c, "label": 0}) + "\n" for q, c in MC)
    with open(root / "gen.jsonl", "w") as f:
        f.writelines(json.dumps({"question": q, "answer": a}) + "\n" for q, a in GEN)
    common = "dataset_path: json\ntest_split: test\ndoc_to_text: \"{{question}}\"\n"
    (root / "kk_mc.yaml").write_text(
        f"task: kk_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {root / 'mc.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{label}}\"\n"
        "metric_list:\n  - metric: acc\n")
    (root / "kk_gen.yaml").write_text(
        f"task: kk_gen\n{common}dataset_kwargs:\n  data_files:\n    test: {root / 'gen.jsonl'}\n"
        "output_type: generate_until\ndoc_to_target: \"{{answer}}\"\n"
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 8\nmetric_list:\n  - metric: exact_match\n")


def test_lm_eval_local_completions(tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = write_tiny_model(tmp_path / "tiny")
    _tasks(tmp_path)
    proc, url = start_server(model, "--served-model-name", "tiny")
    try:
        args = (f"model=tiny,base_url={url}/v1/completions,tokenizer={model},tokenizer_backend=huggingface,"
                "batch_size=4,max_retries=1")
        results = lm_eval.simple_evaluate(model="local-completions", model_args=args, tasks=["kk_mc", "kk_gen"],
                                          task_manager=TaskManager(include_path=str(tmp_path)), log_samples=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert 0 <= results["results"]["kk_mc"]["acc,none"] <= 1
    assert "exact_match,none" in results["results"]["kk_gen"]

    tokenizer = AutoTokenizer.from_pretrained(model)
    reference = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    samples = results["samples"]["kk_mc"]
    assert len(samples) == len(MC)
    for sample in samples:
        for (context, continuation), ((loglikelihood, _),) in zip(sample["arguments"], sample["resps"],
                                                                   strict=True):
            ctx = tokenizer(context, add_special_tokens=False).input_ids  # lm-eval's _encode_pair
            whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
            with torch.no_grad():
                logprobs = reference(torch.tensor([whole])).logits[0].log_softmax(-1)
            expected = sum(logprobs[i - 1, whole[i]].item() for i in range(len(ctx), len(whole)))
            assert math.isclose(loglikelihood, expected, abs_tol=1e-3), (context, continuation)

    from kernelkit.serve import LLM, SamplingParams

    llm = LLM(str(model), device="cpu")
    for sample in results["samples"]["kk_gen"]:
        prompt = sample["arguments"][0][0]
        ours = llm.generate([tokenizer(prompt, add_special_tokens=False).input_ids],
                            SamplingParams(temperature=0, max_tokens=8, stop=["\n"]))[0].text
        assert sample["resps"][0][0] == ours, prompt
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
