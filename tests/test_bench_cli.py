"""``kernelkit bench``: clear errors without a GPU and for bad sizes; its table and ``--json`` in the benches'
``timings.json`` format (read back by ``benches/regress.py`` and drawn by ``benches/plots.py``); on a GPU, a
small run of each comparison."""

import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from kernelkit.bench import timings
from kernelkit.cli import main

sys.path.insert(0, str(Path(__file__).parent.parent / "benches"))
import plots  # noqa: E402
import regress  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
@pytest.mark.parametrize("args", [["moe"], ["gemm", "--n", "256", "--k", "256"], ["quant", "-H", "256"]])
def test_bench_without_a_gpu_says_so(args):
    out = CliRunner().invoke(main, ["bench", *args])
    assert out.exit_code == 1 and "kernelkit bench needs a CUDA GPU, and torch sees none" in out.output


def test_bench_rejects_bad_arguments():
    out = CliRunner().invoke(main, ["bench", "gemm", "--n", "256", "--k", "256", "--m", "1,0"])
    assert out.exit_code == 2 and "expected positive integers" in out.output
    out = CliRunner().invoke(main, ["bench", "quant"])
    assert out.exit_code == 2 and "Missing option '--hidden'" in out.output
    from kernelkit.bench import cases

    with pytest.raises(ValueError, match="N and K must be multiples of 128"):
        cases.gemm(200, 256, [1])
    with pytest.raises(ValueError, match="group size 128 does not divide hidden size 576"):
        cases.quant(576, [1])
    with pytest.raises(ValueError, match="hidden and inter must be even"):
        cases.moe(8, 2, 64, 31, [1])


def test_report_writes_timings_that_regress_and_plots_read(tmp_path, monkeypatch, capsys):
    import importlib

    from kernelkit.ops import timing

    bench = importlib.import_module("kernelkit.cli.bench")

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(timing, "copy_bandwidth_gbs", lambda: 4250.0)
    cases = [{"params": {"m": m, "n": 4096, "k": 4096}, "nbytes": None, "flops": 2 * m * 4096 * 4096,
              "ours": {"kernelkit": 0.01 * m}, "peers": {"bf16 cuBLAS": 0.02 * m}} for m in (1, 16)]
    bench._report("gemm", cases, tmp_path / "t.json")
    printed = capsys.readouterr().out
    assert "2.00x" in printed and "10.0 (3 TFLOP/s)" in printed
    data = timings.load(tmp_path / "t.json")
    assert data["device"] == "NVIDIA H200" and data["copy_gbs"] == 4250.0
    assert data["cases"]["kernelkit bench gemm[16-4096-4096]"]["ours"] == {"kernelkit": 0.16}
    assert regress.main([str(tmp_path / "t.json"), "--baseline", str(tmp_path / "t.json")]) == 0
    assert [p.name for p in plots.plot(tmp_path / "t.json", tmp_path)] == ["bench_gemm.png"]


@pytest.mark.gpu
def test_bench_runs_each_comparison_on_a_gpu(tmp_path):
    for args in (["gemm", "--n", "256", "--k", "384", "--m", "1,17"], ["quant", "-H", "512", "--tokens", "1,33"],
                 ["moe", "-E", "8", "--top-k", "2", "-H", "64", "-N", "32", "--tokens", "1,9"]):
        out = CliRunner().invoke(main, ["bench", *args, "--json", str(tmp_path / f"{args[0]}.json")])
        assert out.exit_code == 0, out.output
        data = timings.load(tmp_path / f"{args[0]}.json")
        assert all(t > 0 for c in data["cases"].values() for t in c["ours"].values())
