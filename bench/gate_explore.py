#!/usr/bin/env python
"""Bench (not a test): the exhaustive gate explorer at a size too large for CI.

    python bench/gate_explore.py                        # the bench size, a few minutes
    python bench/gate_explore.py --triggers pp --vad 1  # any size
    python bench/gate_explore.py --gate one-flag        # a planted bug: its traces

Breadth-first over every interleaving of the triggers with the model server, on the
real ``GateMachine`` (``tests/gate_explorer.py`` explains the model, the moves, the
checks and the state key). Prints progress on stderr, then the state count, the
transitions, the depth and the time, and the shortest trace of each violation found;
writes ``bench/results/local/gate_explore.json`` (``--name NAME``: the committed
``bench/results/NAME.json``). Exits 1 if a violation was found.

The default size: three triggers (two plain, coalesced; one with params) against one
server VAD response, one failed send, one lost ``response.created``, one interrupt,
one ``invalid_value`` error and a close, with ``max_attempts=2`` (so a trigger can run
out of attempts). ``tests/test_gate_explorer.py`` runs smaller sizes in CI;
``bench/README.md`` lists larger runs (``--vad 2``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))  # the explorer lives with the tests
sys.path.insert(0, str(BENCH_DIR))

from _common import (  # noqa: E402
    add_result_options,
    non_negative_int,
    positive_int,
    result_path,
    write_json,
)
from gate_explorer import (  # noqa: E402
    Bounds,
    GateMachine,
    MergesMarkedTriggers,
    OneFlagGate,
    Report,
    ResendingWatchdog,
    explore,
)

GATES = {
    "real": GateMachine,
    "one-flag": OneFlagGate,
    "resending-watchdog": ResendingWatchdog,
    "merges-marked": MergesMarkedTriggers,
}


def trigger_order(text: str) -> str:
    """``--triggers``: the request order, ``p`` (plain) and ``P`` (with params)."""
    if not text or set(text) - {"p", "P"}:
        raise argparse.ArgumentTypeError(f"{text!r}: use p (plain) and P (with params)")
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--triggers",
        type=trigger_order,
        default="ppP",
        help="request order: p plain, P with params",
    )
    p.add_argument("--vad", type=non_negative_int, default=1, help="server (VAD) responses")
    p.add_argument("--failures", type=non_negative_int, default=1, help="client sends that fail")
    p.add_argument("--drops", type=non_negative_int, default=1, help="response.created events lost")
    p.add_argument("--cancels", type=non_negative_int, default=1, help="interrupt() calls")
    p.add_argument("--invalid", type=non_negative_int, default=1, help="creates refused as invalid")
    p.add_argument("--close", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--max-attempts", type=positive_int, default=2)
    p.add_argument("--gate", choices=sorted(GATES), default="real")
    p.add_argument("--max-states", type=positive_int, default=None, help="stop early")
    add_result_options(p, "gate_explore")
    args = p.parse_args()

    bounds = Bounds(
        triggers=args.triggers,
        vad=args.vad,
        send_failures=args.failures,
        drops=args.drops,
        cancels=args.cancels,
        close=args.close,
        invalid=args.invalid,
        max_attempts=args.max_attempts,
    )

    def progress(report: Report, frontier: int) -> None:
        print(
            f"\r{report.states:>10,} states  {report.seconds:7.0f} s  frontier {frontier:,}  ",
            end="",
            file=sys.stderr,
            flush=True,
        )

    load = [round(x, 2) for x in os.getloadavg()]
    cpu = time.process_time()
    report = explore(bounds, GATES[args.gate], max_states=args.max_states, progress=progress)
    cpu = time.process_time() - cpu
    print(file=sys.stderr)
    print(report.summary())
    print(f"CPU {cpu:.1f} s (wall {report.seconds:.1f} s; the machine may be shared)")
    if report.violations:
        print(report.traces())
    record = {
        "command": " ".join(["python", "bench/gate_explore.py", *sys.argv[1:]]),
        "gate": report.gate,
        "bounds": dataclasses.asdict(bounds),
        "states": report.states,
        "transitions": report.transitions,
        "depth": report.depth,
        "seconds": round(report.seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "complete": report.complete,
        "violations": report.violations,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": load,
    }
    out = result_path(args.name, "gate_explore")
    out = write_json(out.stem, record, out.parent)
    print(f"wrote {out.relative_to(BENCH_DIR.parent)}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
