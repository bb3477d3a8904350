"""Request bodies of the OpenAI-compatible API (pydantic), their translation to SamplingParams, and the
OpenAI error object.

Every number is bounded here (integers to what the engine's tensors hold, floats finite), strings must be
valid Unicode (a lone surrogate such as ``"\\ud800"`` cannot be tokenized), and OpenAI fields that would change
results if ignored (n > 1, best_of, suffix, logit_bias, penalties, tools and functions, a response_format
other than text) are refused with a 400 naming the field. Other unknown fields are ignored, as OpenAI's own
clients send a few that do not matter here (``user``, ``metadata``).

``prompt`` of /v1/completions may be a string, a list of strings, a list of token ids or a list of such
lists (one choice per prompt, as OpenAI and vLLM define it); ``echo`` returns the prompt with its tokens'
logprobs, and ``max_tokens`` 0 is allowed with it (scoring only: lm-evaluation-harness's loglikelihood).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from kernelkit.serve.sampling import INT32_MAX, MAX_LOGPROBS, SamplingParams

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode: {e.reason} at position {e.start}") from None
    return text


def _token_ids(ids: list, what: str) -> list[int]:
    if not ids:
        raise ValueError(f"{what} must not be empty")
    if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= INT32_MAX for t in ids):
        raise ValueError(f"{what}: token ids must be integers in [0, {INT32_MAX}]")
    return ids


def _prompt(value: Any) -> str | list[str] | list[int] | list[list[int]]:
    """A prompt as OpenAI defines it, with one message naming what is wrong."""
    if isinstance(value, str):
        return _valid_unicode(value)
    if not isinstance(value, list) or not value:
        raise ValueError("prompt must be a string, a list of strings, a list of token ids or a list of token-id "
                         "lists, and not empty")
    if all(isinstance(p, str) for p in value):
        return [_valid_unicode(p) for p in value]
    if all(isinstance(p, list) for p in value):
        return [_token_ids(p, f"prompt[{i}]") for i, p in enumerate(value)]
    return _token_ids(value, "prompt")


def _stop(value: Any) -> str | list[str] | None:
    stops = [value] if isinstance(value, str) else value
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)):
        raise ValueError("stop must be a non-empty string or a list of them")
    for s in stops or []:
        _valid_unicode(s)
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]
TokenId = Annotated[int, Field(ge=0, le=INT32_MAX)]
Finite = Annotated[float, Field(allow_inf_nan=False)]

# field -> the values that mean "off", which are accepted; anything else is refused
_REFUSED: dict[str, tuple] = {
    "best_of": (None, 1), "suffix": (None, ""), "logit_bias": (None, {}), "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0), "repetition_penalty": (None, 1), "tools": (None, []), "functions": (None, []),
    "tool_choice": (None, "none"), "function_call": (None, "none"), "parallel_tool_calls": (None, False),
    "response_format": (None, {"type": "text"}),
}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Text
    max_tokens: int | None = Field(default=None, ge=0, le=INT32_MAX)
    temperature: Finite = Field(default=1.0, ge=0, le=2)
    top_p: Finite = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=-1, le=INT32_MAX)
    min_p: Finite = Field(default=0.0, ge=0, le=1)
    stop: str | list[str] | None = None
    stop_token_ids: list[TokenId] = Field(default_factory=list)
    ignore_eos: bool = False
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None  # include_usage: a last chunk with usage and no choices
    n: int = 1
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, body: Any) -> Any:
        if isinstance(body, dict):
            for name, neutral in _REFUSED.items():
                value = body.get(name)
                if value not in neutral:
                    raise PydanticCustomError("unsupported", "{param} is not supported by this server",
                                              {"param": name})
        return body

    @field_validator("stop", mode="before")
    @classmethod
    def _check_stop(cls, value: Any) -> Any:
        return _stop(value)

    @field_validator("n")
    @classmethod
    def _single(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    def sampling_params(self, default_max_tokens: int, logprobs: int | None,
                        prompt_logprobs: int | None = None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        max_tokens = default_max_tokens if self.max_tokens is None else self.max_tokens
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
                              max_tokens=max_tokens, stop=stop, stop_token_ids=self.stop_token_ids,
                              ignore_eos=self.ignore_eos, seed=self.seed, logprobs=logprobs,
                              prompt_logprobs=prompt_logprobs)


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False

    @field_validator("prompt", mode="before")
    @classmethod
    def _check_prompt(cls, value: Any) -> Any:
        return _prompt(value)

    @model_validator(mode="after")
    def _zero_tokens_need_echo(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens 0 is allowed only with echo (scoring the prompt)")
        return self

    def prompts(self) -> list[str | list[int]]:
        """One entry per choice: text or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        return list(p) if isinstance(p[0], str | list) else [list(p)]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)

    @model_validator(mode="after")
    def _some_tokens(self) -> ChatCompletionRequest:
        if self.max_tokens == 0:
            raise ValueError("max_tokens must be >= 1")
        return self


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def json_logprob(value: float) -> float:
    """A logprob JSON can carry: -inf (a token the model rules out) and NaN become -9999.0, as in vLLM."""
    return value if math.isfinite(value) else -9999.0
