"""Helpers shared by the engine's parity tests."""

import torch

from kernelkit.serve import LLM, SamplingParams


def prefill_logits(llm: LLM, ids: list[int]) -> torch.Tensor:
    """fp32 logits [len(ids), vocab] of one prompt's prefill step, through the engine's scheduler, runner and
    model (the request is aborted afterwards)."""
    engine = llm.engine
    engine.add_request("prefill-logits", ids, SamplingParams(temperature=0, max_tokens=1))
    batch = engine.scheduler.schedule()
    assert batch.num_new_tokens == [len(ids)]
    input_ids, positions, meta, _ = engine.runner.prepare(batch)
    with torch.no_grad():
        hidden = engine.model(input_ids, positions, engine.runner.kv_caches, meta, engine.runner.backend)
        logits = engine.model.compute_logits(hidden)
    engine.abort("prefill-logits")
    return logits
