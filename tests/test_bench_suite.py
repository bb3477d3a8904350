"""The benches' regression suite on the CPU: ``record`` writes the numbers of a run to ``timings.json`` in its
documented format, ``benches/regress.py`` fails on a kernelkit case slower than its baseline (and on nothing
else), and ``benches/plots.py`` draws a PNG per table."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernelkit.bench import timings

BENCHES = Path(__file__).parent.parent / "benches"
sys.path.insert(0, str(BENCHES))
import plots  # noqa: E402
import regress  # noqa: E402

BENCH = '''
import pytest

@pytest.mark.parametrize("t", [1, 64])
def bench_quant(record, t):
    record("quant", {"T": t, "ours": f"{t} µs"}, ours={"triton": t * 1e-3}, peers={"torch": t * 2e-3},
           nbytes=1000 * t)

def bench_table_only(record):
    record("table_only", {"x": 1})
'''


def test_record_writes_the_documented_timings_file(tmp_path):
    shutil.copy(BENCHES / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "bench_fake.py").write_text(BENCH)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                          "-o", "python_files=bench_*.py", "-o", "python_functions=bench_*", str(tmp_path)],
                         cwd=tmp_path, capture_output=True, text=True,
                         env={**__import__("os").environ, "KERNELKIT_BENCH_OUT": str(out)})
    assert run.returncode == 0, run.stdout + run.stderr
    data = timings.load(out / "timings.json")
    assert data["device"] == "cpu" and data["copy_gbs"] is None
    assert set(data["cases"]) == {"bench_fake.py::bench_quant[1]", "bench_fake.py::bench_quant[64]"}
    case = data["cases"]["bench_fake.py::bench_quant[64]"]
    assert case == {"table": "quant", "params": {"t": 64}, "nbytes": 64000, "flops": None,
                    "ours": {"triton": 0.064}, "peers": {"torch": 0.128}}
    assert (out / "quant.md").is_file() and (out / "table_only.md").is_file()


def _timings(tmp_path, name, cases, device="NVIDIA H200"):
    path = tmp_path / name
    path.write_text(json.dumps({"format": timings.FORMAT, "device": device, "date": "2026-12-07", "torch": "2.11",
                                "copy_gbs": 4000.0, "cases": cases}))
    return path


def _case(table, params, ours, peers=None, nbytes=None, flops=None):
    return {"table": table, "params": params, "nbytes": nbytes, "flops": flops, "ours": ours, "peers": peers or {}}


def test_regress_fails_only_on_a_kernelkit_case_slower_than_its_baseline(tmp_path, capsys):
    base = _timings(tmp_path, "base.json", {
        "a[1]": _case("q", {"t": 1}, {"triton": 0.010}, {"torch": 0.02}),
        "a[2]": _case("q", {"t": 2}, {"triton": 0.100}),
        "tiny": _case("q", {"t": 3}, {"triton": 0.0010}),
        "gone": _case("q", {"t": 4}, {"triton": 0.1})})
    same = _timings(tmp_path, "same.json", {
        "a[1]": _case("q", {"t": 1}, {"triton": 0.0104}, {"torch": 0.9}),  # +4%; a peer slower is not ours
        "a[2]": _case("q", {"t": 2}, {"triton": 0.090}),
        "tiny": _case("q", {"t": 3}, {"triton": 0.0014}),  # +40% but 0.4 µs: under --min-us
        "new": _case("q", {"t": 5}, {"triton": 0.1})})
    assert regress.main([str(same), "--baseline", str(base)]) == 0
    printed = capsys.readouterr().out
    assert "0 slower" in printed
    assert "1 baseline cases or implementations are not in this run, the first: gone" in printed
    assert "unmatched new: only in the run" in printed
    slow = _timings(tmp_path, "slow.json", {"a[1]": _case("q", {"t": 1}, {"triton": 0.0106}),
                                            "a[2]": _case("q", {"t": 2}, {"triton": 0.2})})
    assert regress.main([str(slow), "--baseline", str(base)]) == 1
    printed = capsys.readouterr().out
    assert "SLOWER a[1] triton: 10.0 -> 10.6 µs (+6.0%)" in printed and "SLOWER a[2] triton" in printed
    assert regress.main([str(slow), "--baseline", str(base), "--threshold", "1.5"]) == 0


def test_regress_update_merges_the_run_into_the_baseline(tmp_path):
    base = _timings(tmp_path, "base.json", {"a": _case("q", {"t": 1}, {"triton": 0.01}),
                                            "b": _case("q", {"t": 2}, {"triton": 0.01})})
    run = _timings(tmp_path, "run.json", {"a": _case("q", {"t": 1}, {"triton": 0.05})})
    assert regress.main([str(run), "--baseline", str(base), "--update"]) == 0
    merged = timings.load(base)["cases"]
    assert merged["a"]["ours"] == {"triton": 0.05} and merged["b"]["ours"] == {"triton": 0.01}
    fresh = tmp_path / "baselines" / "new.json"
    assert regress.main([str(run), "--baseline", str(fresh)]) == 1  # no baseline yet: says so
    assert regress.main([str(run), "--baseline", str(fresh), "--update"]) == 0 and fresh.is_file()
    assert regress.baseline_path("NVIDIA H200").name == "NVIDIA_H200.json"


def test_regress_and_plots_reject_a_file_that_is_not_timings(tmp_path):
    bad = tmp_path / "bench.json"
    bad.write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(ValueError, match="not a kernelkit-bench-timings/1 file"):
        timings.load(bad)
    with pytest.raises(ValueError, match="not a kernelkit-bench-timings/1 file"):
        plots.plot(bad, tmp_path)


def test_plots_draw_a_png_per_table(tmp_path):
    cases = {}
    for t in (1, 16, 4096):
        for h in (2048, 4096):
            cases[f"q[{t}-{h}]"] = _case("quant", {"t": t, "h": h}, {"cuda": 1e-3 * t}, {"torch": 2e-3 * t},
                                         nbytes=3 * t * h)
        cases[f"g[{t}]"] = _case("gemm", {"m": t, "n": 4096, "k": 4096}, {"kernelkit": 0.01 * t},
                                 {"bf16 cuBLAS": 0.012 * t}, flops=2 * t * 4096 * 4096)
        cases[f"moe[{t}]"] = _case("moe", {"tokens": t}, {"bf16": 0.01, "W8A8": 0.008})
    for model in ("llama bf16", "llama fp8"):
        cases[f"d[{model}]"] = _case("decode", {"shape": model.split()[0], "quant": model.split()[1]},
                                     {"decode step": 5.0, "forward": 4.5}, nbytes=16 * 10**9)
    written = plots.plot(_timings(tmp_path, "timings.json", cases), tmp_path / "png")
    assert sorted(p.name for p in written) == ["decode.png", "gemm.png", "moe.png", "quant.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
