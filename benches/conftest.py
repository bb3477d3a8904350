"""Benchmark set-up: result rows are gathered and written as markdown tables to $KERNELKIT_BENCH_OUT
(default benches/out/) at the end of the session. GPU-only benches skip without a GPU (../conftest.py)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
_ROWS: dict[str, list[dict]] = {}


@pytest.fixture(scope="session")
def record():
    """record(table, row_dict): add a row to a named results table."""
    return lambda table, row: _ROWS.setdefault(table, []).append(row)


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
