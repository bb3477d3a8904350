"""The offline Python API: ``LLM("path").generate(prompts, SamplingParams(...))``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence as Seq

from kernelkit.serve.config import EngineConfig
from kernelkit.serve.engine import LLMEngine, RequestOutput
from kernelkit.serve.sampling import SamplingParams


class LLM:
    """An engine plus a loop that runs it until the submitted requests finish.

    Args:
        model: HF model directory; other keyword arguments are EngineConfig fields.
    """

    def __init__(self, model: str, **config):
        self.engine = LLMEngine(EngineConfig(model=str(model), **config))
        self._ids = itertools.count()

    def generate(self, prompts: str | list[str] | list[list[int]],
                 params: SamplingParams | Seq[SamplingParams] | None = None) -> list[RequestOutput]:
        """Generate for every prompt (text or token ids); outputs in submission order.

        Raises:
            RequestError: a prompt the engine cannot take; nothing is left queued then.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        params = params or SamplingParams()
        per_prompt = list(params) if isinstance(params, Seq) else [params] * len(prompts)
        ids = [f"offline-{next(self._ids)}" for _ in prompts]
        try:
            for request_id, prompt, p in zip(ids, prompts, per_prompt, strict=True):
                self.engine.add_request(request_id, prompt, p)
        except Exception:
            for request_id in ids:
                self.engine.abort(request_id)
            raise
        final: dict[str, RequestOutput] = {}
        while len(final) < len(ids):
            for out in self.engine.step():
                if out.finished:
                    final[out.request_id] = out
        return [final[i] for i in ids]

    def close(self) -> None:
        """Stop the engine's tensor-parallel workers, if any."""
        self.engine.close()

    def chat(self, messages: list[dict], params: SamplingParams | None = None) -> RequestOutput:
        """One chat turn through the model's chat template."""
        prompt = self.engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.generate([prompt], params)[0]
