"""The benches' regression check: compare a run's ``timings.json`` (``kernelkit/bench/timings.py`` defines its
format) with the committed baseline of the same device, ``benches/baselines/<device>.json``, and
list every kernelkit case that got slower.

usage: python benches/regress.py TIMINGS [--baseline FILE] [--threshold 0.05] [--min-us 0.5] [--update]

Exit status 1 when any case of kernelkit's own implementations (a case's ``ours``) is more than ``threshold``
slower than its baseline and by more than ``min-us`` microseconds (so that sub-microsecond jitter of the
smallest kernels is not a regression); 0 otherwise. Peers' times are not guarded. Cases that only one side has
are reported, not failed (a narrowed run, a new bench): the run's new ones listed, the baseline's missing ones
counted. ``--update`` merges the run into the baseline (the run's cases replace the baseline's) after printing
the comparison, and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kernelkit.bench.timings import load, write_json_atomic

BASELINES = Path(__file__).parent / "baselines"


def baseline_path(device: str) -> Path:
    """benches/baselines/<device name, spaces as underscores>.json"""
    return BASELINES / (device.replace(" ", "_").replace("/", "_") + ".json")


def compare(current: dict, baseline: dict, threshold: float = 0.05, min_us: float = 0.5
            ) -> tuple[list[tuple[str, str, float, float]], list[str]]:
    """(regressions as (case, implementation, baseline ms, current ms), cases or implementations only one side
    has). A regression is ``current > baseline * (1 + threshold)`` and ``current - baseline > min_us``."""
    slower, unmatched = [], []
    for case in sorted(set(current["cases"]) | set(baseline["cases"])):
        ours, theirs = current["cases"].get(case, {}).get("ours"), baseline["cases"].get(case, {}).get("ours")
        if ours is None or theirs is None:
            unmatched.append(f"{case}: only in the {'run' if ours is not None else 'baseline'}")
            continue
        for impl in sorted(set(ours) | set(theirs)):
            if impl not in ours or impl not in theirs:
                unmatched.append(f"{case} {impl}: only in the {'run' if impl in ours else 'baseline'}")
            elif ours[impl] > theirs[impl] * (1 + threshold) and (ours[impl] - theirs[impl]) * 1e3 > min_us:
                slower.append((case, impl, theirs[impl], ours[impl]))
    return slower, unmatched


def merge(current: dict, baseline: dict | None) -> dict:
    """The baseline with the run's cases replacing its own, dated and versioned as the run."""
    cases = dict(baseline["cases"]) if baseline else {}
    cases.update(current["cases"])
    return {**current, "cases": cases}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("timings", type=Path)
    parser.add_argument("--baseline", type=Path, help="default: benches/baselines/<the run's device>.json")
    parser.add_argument("--threshold", type=float, default=0.05, help="relative slowdown that fails (0.05 = 5%%)")
    parser.add_argument("--min-us", type=float, default=0.5, help="absolute slowdown below which nothing fails")
    parser.add_argument("--update", action="store_true", help="merge the run into the baseline")
    args = parser.parse_args(argv)
    current = load(args.timings)
    path = args.baseline or baseline_path(current["device"])
    baseline = load(path) if path.is_file() else None
    if baseline is None and not args.update:
        print(f"no baseline for {current['device']} at {path}; --update writes one", file=sys.stderr)
        return 1
    slower = []
    if baseline is not None:
        if baseline["device"] != current["device"]:
            print(f"warning: the baseline is of {baseline['device']}, the run of {current['device']}")
        slower, unmatched = compare(current, baseline, args.threshold, args.min_us)
        compared = len(set(current["cases"]) & set(baseline["cases"]))
        print(f"{compared} cases compared with {path.name} ({baseline['date']}, torch {baseline['torch']}); "
              f"{len(slower)} slower by more than {args.threshold:.0%}")
        for case, impl, before, after in slower:
            print(f"SLOWER {case} {impl}: {before * 1e3:.1f} -> {after * 1e3:.1f} µs ({after / before - 1:+.1%})")
        missing = [line for line in unmatched if line.endswith("only in the baseline")]
        for line in unmatched:
            if line not in missing:
                print(f"unmatched {line}")
        if missing:  # a narrowed run leaves most of the baseline out: a count, not hundreds of lines
            print(f"{len(missing)} baseline cases or implementations are not in this run, the first: {missing[0]}")
    if args.update:
        write_json_atomic(path, merge(current, baseline))
        print(f"wrote {path}")
        return 0
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
