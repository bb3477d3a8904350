"""Pictures of a bench run: one PNG per results table of a ``timings.json`` (``kernelkit/bench/timings.py``).

usage: python benches/plots.py TIMINGS [--out DIR]      (default: the folder of TIMINGS)

A table whose cases vary a token or row count (``t``, ``tokens`` or ``m``) gets one panel per value of its other
parameters, that count on a log x axis and, on y, TFLOP/s where the case counts its FLOPs, GB/s where it counts
its bytes (with the device's copy rate drawn as the roof), else µs; kernelkit's implementations drawn solid,
the peers' dashed. Other tables (the serving benches) get bars of kernelkit's times in ms beside the
weight-read floor (bytes / copy rate) where the case counts its bytes.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kernelkit.bench.timings import load  # noqa: E402

X_PARAMS = ("t", "tokens", "m")


def _value(case: dict, ms: float) -> tuple[float, str]:
    if case["flops"]:
        return case["flops"] / ms / 1e9, "TFLOP/s"
    if case["nbytes"]:
        return case["nbytes"] / ms / 1e6, "GB/s"
    return ms * 1e3, "µs"


def _sweep(ax, cases: list[dict], x_param: str, copy_gbs: float | None) -> None:
    series: dict[tuple[str, bool], list[tuple[float, float]]] = defaultdict(list)
    unit = "µs"
    for case in cases:
        for ours, times in ((True, case["ours"]), (False, case["peers"])):
            for impl, ms in times.items():
                value, unit = _value(case, ms)
                series[(impl, ours)].append((case["params"][x_param], value))
    for (impl, ours), points in series.items():
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, "o-" if ours else "s--", label=impl + ("" if ours else " (peer)"), markersize=3)
    if unit == "GB/s" and copy_gbs:
        ax.axhline(copy_gbs, color="black", linewidth=1, linestyle=":", label=f"copy roof {copy_gbs:.0f} GB/s")
    ax.set_xscale("log", base=2)
    if unit == "µs":
        ax.set_yscale("log")
    ax.set_xlabel(x_param.upper() if len(x_param) == 1 else x_param)
    ax.set_ylabel(unit)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)


def _bars(ax, cases: list[dict], copy_gbs: float | None) -> None:
    labels, bars = [], defaultdict(list)
    for case in cases:
        labels.append(" ".join(str(v) for v in case["params"].values()))
        for impl, ms in case["ours"].items():
            bars[impl].append(ms)
        if case["nbytes"] and copy_gbs:
            bars["weight-read floor"].append(case["nbytes"] / (copy_gbs * 1e6))
    width = 0.8 / max(1, len(bars))
    for i, (impl, values) in enumerate(bars.items()):
        if len(values) == len(labels):
            ax.bar([j + i * width for j in range(len(labels))], values, width, label=impl)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, rotation=30, ha="right", fontsize=6)
    ax.set_ylabel("ms")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=6)


def plot(timings: Path, out: Path) -> list[Path]:
    """Write one PNG per table; returns their paths. Raises ValueError for a file that is not a timings file."""
    data = load(timings)
    tables: dict[str, list[dict]] = defaultdict(list)
    for case in data["cases"].values():
        tables[case["table"]].append(case)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table, cases in sorted(tables.items()):
        x_param = next((p for p in X_PARAMS if all(p in c["params"] for c in cases)), None)
        panels: dict[tuple, list[dict]] = defaultdict(list)
        for case in cases:
            key = tuple((k, v) for k, v in case["params"].items() if k != x_param) if x_param else ()
            panels[key].append(case)
        cols = min(3, len(panels))
        rows = -(-len(panels) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
        for ax, (key, group) in zip(axes.flat, sorted(panels.items()), strict=False):
            if x_param:
                _sweep(ax, group, x_param, data["copy_gbs"])
            else:
                _bars(ax, group, data["copy_gbs"])
            ax.set_title(", ".join(f"{k}={v}" for k, v in key) or table, fontsize=8)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        fig.suptitle(f"{table}: {data['device']}, {data['date']}, torch {data['torch']}", fontsize=9)
        fig.tight_layout()
        path = out / f"{table}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("timings", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    for path in plot(args.timings, args.out or args.timings.parent):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
