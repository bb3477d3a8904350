"""Benchmark set-up: result rows are gathered and written as markdown tables to $KERNELKIT_BENCH_OUT
(default benches/out/) at the end of the session, with the same measurements as numbers in ``timings.json``
beside them (the regression suite's input: ``benches/regress.py`` compares it with the device's baseline under
``benches/baselines/``, ``benches/plots.py`` draws it). GPU-only benches skip without a GPU (../conftest.py).

``timings.json``: its format is defined in ``kernelkit/bench/timings.py``.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
import torch

from kernelkit.bench import timings

HAS_GPU = torch.cuda.is_available()
_ROWS: dict[str, list[dict]] = {}
_CASES: dict[str, dict] = {}


def _plain(value):
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


@pytest.fixture
def record(request):
    """record(table, row, ours=None, peers=None, nbytes=None, flops=None): add a row to a named results table
    and, when ``ours`` (kernelkit's times in ms by implementation) is given, the case's numbers to
    ``timings.json``; ``peers`` are the baselines' times in ms."""
    node = request.node
    case_id = f"{node.path.name}::{node.name}"
    params = {k: _plain(v) for k, v in getattr(getattr(node, "callspec", None), "params", {}).items()}

    def add(table: str, row: dict, ours: dict[str, float] | None = None, peers: dict[str, float] | None = None,
            nbytes: int | None = None, flops: int | None = None) -> None:
        _ROWS.setdefault(table, []).append(row)
        if ours:
            _CASES[case_id] = {"table": table, "params": params, "nbytes": nbytes, "flops": flops,
                               "ours": dict(ours), "peers": dict(peers or {})}

    return add


def pytest_sessionfinish(session, exitstatus):
    if not _ROWS:
        return
    out = Path(os.environ.get("KERNELKIT_BENCH_OUT", Path(__file__).parent / "out"))
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if HAS_GPU else "cpu"
    for table, rows in _ROWS.items():
        cols = list(dict.fromkeys(c for r in rows for c in r))
        lines = [f"<!-- {device}, {datetime.date.today()}, torch {torch.__version__} -->",
                 "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(r.get(c, "–")) for c in cols) + " |" for r in rows]
        (out / f"{table}.md").write_text("\n".join(lines) + "\n")
        print(f"\n## {table} ({device})\n" + "\n".join(lines[1:]))
    if _CASES:
        timings.write(out / "timings.json", _CASES, device)
