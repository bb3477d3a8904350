"""``kernelkit serve`` (OpenAI-compatible HTTP server) and ``kernelkit generate`` (stream to the terminal)."""

from __future__ import annotations

import sys

import click

from kernelkit.serve.config import EngineConfig


def _engine_options(f):
    options = [
        click.option("--model", "model", required=True, type=click.Path(exists=True, file_okay=False),
                     help="HF model directory (e.g. kernelkit convert output)"),
        click.option("--dtype", default="auto", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), show_default=True),
        click.option("--device", default=None, help="cuda or cpu (default: cuda if available)"),
        click.option("--max-num-seqs", default=64, show_default=True),
        click.option("--max-num-batched-tokens", default=2048, show_default=True),
        click.option("--max-model-len", default=None, type=int),
        click.option("--kv-cache-memory", default=1 << 30, show_default=True, help="KV-cache bytes on CPU"),
        click.option("--gpu-memory-utilization", default=0.85, show_default=True),
        click.option("--no-prefix-caching", is_flag=True),
        click.option("--load-format", default="auto", type=click.Choice(["auto", "dummy"]), show_default=True,
                     help="dummy: random weights of the config's shapes (benchmarks)"),
        click.option("--enforce-eager", is_flag=True, help="no CUDA graphs for decode steps"),
        click.option("--tensor-parallel-size", "-tp", default=1, show_default=True, type=click.IntRange(min=1),
                     help="processes to split the model over (NCCL on GPUs 0..N-1, gloo on CPU)"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _config(model, dtype, device, max_num_seqs, max_num_batched_tokens, max_model_len, kv_cache_memory,
            gpu_memory_utilization, no_prefix_caching, load_format, enforce_eager,
            tensor_parallel_size) -> EngineConfig:
    return EngineConfig(model=model, dtype=dtype, device=device, max_num_seqs=max_num_seqs,
                        max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
                        kv_cache_memory=kv_cache_memory, gpu_memory_utilization=gpu_memory_utilization,
                        enable_prefix_caching=not no_prefix_caching, load_format=load_format,
                        enforce_eager=enforce_eager, tensor_parallel_size=tensor_parallel_size)


def _load_engine(config: EngineConfig):
    """The engine, or a one-line CLI error for what makes it impossible (unsupported architecture, unknown
    quantization scheme, mismatched checkpoint, no room for a KV cache)."""
    from kernelkit.serve.engine import LLMEngine

    try:
        return LLMEngine(config)
    except (ValueError, LookupError) as e:
        raise click.ClickException(str(e)) from None


@click.command("serve")
@_engine_options
@click.option("--host", default="127.0.0.1", show_default=True, help="bind address (loopback unless told)")
@click.option("--port", default=8000, show_default=True)
@click.option("--api-key", default=None, envvar="KERNELKIT_API_KEY", help="require this bearer token")
@click.option("--served-model-name", default=None, help="model id clients use (default: the directory name)")
@click.option("--max-pending", default=256, show_default=True, help="requests in flight before 503")
@click.option("--max-request-bytes", default=4 << 20, show_default=True, type=click.IntRange(min=1),
              help="larger request bodies get 413 before they are parsed")
@click.option("--shutdown-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="seconds in-flight requests may finish after SIGTERM/SIGINT before they are aborted")
def serve_cmd(host, port, api_key, served_model_name, max_pending, max_request_bytes, shutdown_timeout,
              **engine) -> None:
    """Serve MODEL over an OpenAI-compatible HTTP API. Exits 0 after a signal, 1 if the engine fails for good."""
    from kernelkit.serve.server import serve

    llm_engine = _load_engine(_config(**engine))
    try:
        status = serve(llm_engine, host, port, api_key, served_model_name, max_pending, max_request_bytes,
                       shutdown_timeout)
    finally:
        llm_engine.close()
    raise SystemExit(status)


@click.command("generate")
@_engine_options
@click.argument("prompt")
@click.option("--max-tokens", default=128, show_default=True)
@click.option("--temperature", default=0.0, show_default=True)
@click.option("--top-p", default=1.0, show_default=True)
@click.option("--top-k", default=0, show_default=True)
@click.option("--min-p", default=0.0, show_default=True)
@click.option("--seed", default=None, type=int)
@click.option("--raw", is_flag=True, help="use PROMPT as is instead of a chat turn through the chat template")
def generate_cmd(prompt, max_tokens, temperature, top_p, top_k, min_p, seed, raw, **engine) -> None:
    """Generate from PROMPT, streaming the text to the terminal."""
    from kernelkit.serve.sampling import SamplingParams

    try:
        params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                                max_tokens=max_tokens, seed=seed)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    llm = _load_engine(_config(**engine))
    try:
        _stream(llm, prompt, params, raw)
    finally:
        llm.close()


def _stream(llm, prompt: str, params, raw: bool) -> None:
    from kernelkit.serve.engine import RequestError

    text = prompt if raw or llm.tokenizer.chat_template is None else llm.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    try:
        llm.add_request("cli", text, params)
    except RequestError as e:
        raise click.ClickException(str(e)) from None
    while llm.has_unfinished():
        for out in llm.step():
            sys.stdout.write(out.delta_text)
            sys.stdout.flush()
    sys.stdout.write("\n")
