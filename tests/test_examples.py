"""The examples run (on CPU here), so they cannot rot."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quant_ops_in_a_model(capsys):
    runpy.run_path(str(EXAMPLES / "quant_ops_in_a_model.py"), run_name="__main__")
    assert "relative error from FP8 activations" in capsys.readouterr().out


@pytest.mark.slow
def test_quantize_transformers_model(capsys):
    runpy.run_path(str(EXAMPLES / "quantize_transformers_model.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "(210 linear layers quantized)" in out and "Paris" in out.split("fp8-block:")[1]
