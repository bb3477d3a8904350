"""benches/serve_load.py, the online load generator: its metric arithmetic on hand-made timelines, its Poisson
arrivals, and a real run of its CLI against ``kernelkit serve`` (tiny random model) whose token counts must
match what was asked for."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from serve_process import start_server
from tiny_llama import write_tiny_model

_PATH = Path(__file__).parents[1] / "benches" / "serve_load.py"
_spec = importlib.util.spec_from_file_location("serve_load", _PATH)
serve_load = sys.modules["serve_load"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(serve_load)


def test_summarize_follows_bench_serving_definitions():
    R = serve_load.RequestRecord
    records = [R(prompt_len=10, sent=0.0, chunk_times=[0.1, 0.2, 0.4], output_tokens=3),
               R(prompt_len=20, sent=1.0, chunk_times=[1.3], output_tokens=1),
               R(prompt_len=5, sent=2.0, error="APIConnectionError: refused")]
    m = serve_load.summarize(records, duration=2.0)
    assert (m["completed"], m["failed"], m["input_tokens"], m["output_tokens"]) == (2, 1, 30, 4)
    assert m["request_throughput"] == 1.0 and m["output_throughput"] == 2.0
    assert m["ttft_mean_ms"] == pytest.approx(200.0) and m["ttft_p50_ms"] == pytest.approx(200.0)
    assert m["e2e_p50_ms"] == pytest.approx(350.0)
    assert m["tpot_p50_ms"] == pytest.approx(150.0)  # (400 - 100) ms over 2 tokens after the first
    assert m["itl_mean_ms"] == pytest.approx(150.0) and m["itl_p99_ms"] == pytest.approx(199.0)
    assert m["errors"] == ["APIConnectionError: refused"]
    empty = serve_load.summarize([R(prompt_len=1, sent=0.0, error="x")], duration=1.0)
    assert empty["completed"] == 0 and math.isnan(empty["ttft_p99_ms"])


def test_poisson_arrivals_and_lengths():
    w = serve_load.make_workload(4000, 20.0, 300, (3, 9), (2, 5), seed=3)
    gaps = [b - a for a, b in zip(w.arrivals, w.arrivals[1:], strict=False)]
    assert w.arrivals[0] == 0 and min(gaps) >= 0
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 20, rel=0.05)  # exponential gaps, mean 1/rate
    assert sum(g > 1 / 20 for g in gaps) / len(gaps) == pytest.approx(math.exp(-1), abs=0.03)
    assert {len(p) for p in w.prompts} == set(range(3, 10)) and set(w.max_tokens) == {2, 3, 4, 5}
    assert max(t for p in w.prompts for t in p) < 300
    assert serve_load.make_workload(5, math.inf, 300, (3, 3), (2, 2)).arrivals == [0.0] * 5
    for bad in [dict(rate=0.0), dict(rate=-1.0), dict(num_prompts=0)]:
        with pytest.raises(ValueError, match="bad workload"):
            serve_load.make_workload(**({"num_prompts": 3, "rate": 1.0, "vocab_size": 300, "input_len": (1, 2),
                                         "output_len": (1, 2)} | bad))


@pytest.mark.parametrize("args, message", [(["--rates", "0"], "bad workload"), (["--rates", "abc"], "'abc'"),
                                           (["--input-len", "5-x"], "'x'")])
def test_cli_bad_input_is_a_usage_error(args, message):
    out = CliRunner().invoke(serve_load.main, ["--model", "m", "--vocab-size", "10", *args])
    assert out.exit_code == 2 and message in out.output  # a click usage error, not a traceback (exit code 1)


@pytest.mark.slow
def test_cli_against_kernelkit_serve(tmp_path):
    proc, url = start_server(write_tiny_model(tmp_path / "tiny"), "--served-model-name", "tiny")
    try:
        out = tmp_path / "load.json"
        cli = subprocess.run([sys.executable, str(_PATH), "--base-url", url, "--model", "tiny", "--vocab-size", "256",
                              "--rates", "40,inf", "--num-prompts", "6", "--input-len", "4-12", "--output-len", "3-6",
                              "--json-out", str(out)], capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stderr
        assert "| rate (req/s) |" in cli.stdout and "| inf |" in cli.stdout
        expected = sum(serve_load.make_workload(6, 40.0, 256, (4, 12), (3, 6)).max_tokens)
        for m in json.loads(out.read_text()):
            assert (m["completed"], m["failed"]) == (6, 0), m["errors"]
            assert m["output_tokens"] == expected  # ignore_eos: every request runs to max_tokens
            assert 0 < m["ttft_p50_ms"] <= m["ttft_p99_ms"] <= m["e2e_p99_ms"]
            assert m["itl_p50_ms"] > 0 and m["tpot_p50_ms"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
