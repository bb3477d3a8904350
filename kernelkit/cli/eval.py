"""``kernelkit eval ppl MODEL_DIR``: perplexity of a checkpoint on a fixed text."""

from __future__ import annotations

from pathlib import Path

import click
import torch


@click.group("eval")
def eval_group() -> None:
    """Evaluate checkpoints."""


@eval_group.command("ppl")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False),
              help="UTF-8 text file (default: Python's bundled pydoc topics)")
@click.option("--max-tokens", default=4096, show_default=True)
@click.option("--context", default=512, show_default=True, help="tokens per window")
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
def ppl(model_dir, text_file, max_tokens, context, device) -> None:
    """Perplexity of MODEL_DIR (HF format, quantized or not) on a fixed text."""
    from kernelkit.eval.load import load_causal_lm
    from kernelkit.eval.ppl import default_text, perplexity
    from kernelkit.quant import SchemeError

    text = Path(text_file).read_text(encoding="utf-8") if text_file else default_text()
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    from transformers import AutoTokenizer

    try:
        model = load_causal_lm(model_dir, dtype, device)
        value, tokens = perplexity(model, AutoTokenizer.from_pretrained(model_dir), text, context, max_tokens)
    except (SchemeError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"perplexity {value:.4f} over {tokens} tokens ({model_dir}, {dtype}, {device})")
