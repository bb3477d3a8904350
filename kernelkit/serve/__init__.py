"""A small reference serving engine: paged KV cache, continuous batching, OpenAI-compatible HTTP API.

    from kernelkit.serve import LLM, SamplingParams
    LLM("path/to/model").generate(["Hello"], SamplingParams(max_tokens=32))
"""

from kernelkit.serve.config import EngineConfig
from kernelkit.serve.engine import LLMEngine, RequestError, RequestOutput
from kernelkit.serve.llm import LLM
from kernelkit.serve.sampling import SamplingParams

__all__ = ["LLM", "EngineConfig", "LLMEngine", "RequestError", "RequestOutput", "SamplingParams"]
