"""Failover: how long a call has no sideband after the worker holding it is killed.

The deployment of the README's "Calls across worker processes", on loopback: Debian's
``redis-server`` (the shared registry), the emulator in its own process, gunicorn
serving ``examples/flask_app.py`` with ``--workers`` processes, and one browser - a raw
aiortc peer (``tests/cluster.py``) - whose call lives through every kill. Each round:
find the worker holding the call's sideband (Redis), ``SIGKILL`` it (``--signal TERM``:
stop it gracefully, as a deploy does: it releases its leases), and time

- ``failover_s``: from the kill to the new holder's sideband ready (``attached_at``,
  written by the worker that took over) - the bound the README quotes;
- ``claim_s``: from the kill to the lease claimed (the lease expiring + the scan);
- ``attach_s``: from the claim to the sideband ready (attach + ``session.update``);
- ``gap_s``: the gap the new holder reported (from the dead holder's last sign of
  life - its latest renewal, claim or attach - or its detach, if it released);
- ``renewed_s``: how long before the kill the holder last renewed (or attached);
- ``answered_s`` (every ``--inflight-every``-th kill): the kill lands while a slow
  tool (``track_parcel``, ``--carrier-seconds``) runs in the doomed worker; time from
  the kill to the browser hearing its answer, which the new holder produces by running
  the recorded, unanswered call again and requesting one new follow-up;
- then the browser asks a new question with a tool round, through the new sideband.

After the last kill the emulator's record of the call is checked: every
``response.create`` unique, none repeated after a kill, 0 active-response rejections.

    python bench/failover.py --name failover      # 20 SIGKILLs, TTL 2 s -> results/failover.json
    python bench/failover.py --signal TERM --kills 10 --name failover_term  # graceful stops
    python bench/failover.py --kills 5 --ttl 1    # quicker -> results/local/failover.json
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))  # the cluster harness and its raw peer

from _common import (  # noqa: E402
    add_result_options,
    fmt,
    machine_info,
    percentile,
    positive_float,
    positive_int,
    result_path,
    table,
    write_json,
)
from cluster import (  # noqa: E402
    App,
    Browser,
    EmulatorServer,
    RedisServer,
    flask_app,
    redis_server_missing,
    wait_until,
)

from rtclient import LoopThread  # noqa: E402

TICKET_KEY = "rtclient_ticket"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=positive_int, default=20)
    parser.add_argument("--ttl", type=positive_float, default=2.0, help="lease TTL, s")
    parser.add_argument("--workers", type=positive_int, default=3)
    parser.add_argument(
        "--inflight-every", type=positive_int, default=2, help="kill mid-tool every Nth round"
    )
    parser.add_argument("--carrier-seconds", type=positive_float, default=1.0)
    parser.add_argument(
        "--signal",
        choices=("KILL", "TERM"),
        default="KILL",
        help="KILL: the worker dies, its leases expire; TERM: it shuts down gracefully "
        "and releases them (a deploy)",
    )
    add_result_options(parser, "failover")
    return parser.parse_args()


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values), 3),
        "p50": round(percentile(values, 50) or 0.0, 3),
        "p90": round(percentile(values, 90) or 0.0, 3),
        "max": round(max(values), 3),
        "mean": round(sum(values) / len(values), 3),
    }


def one_kill(
    app: App, browser: Browser, n: int, inflight: bool, ttl: float, sig: signal.Signals
) -> dict[str, Any]:
    reg = app.registry
    call_id = browser.call_id
    reg.wait_settled(call_id)  # the last round recorded as answered and followed up
    holder = reg.holder_pid(call_id)
    epoch = int(reg.call(call_id)["epoch"])
    pending = None
    if inflight:
        known = set(reg.tools(call_id))
        pending = browser.ask_later(f'track_parcel({{"order_id": {7 + n % 2}}})', timeout=60)
        wait_until(
            lambda: any(
                r["state"] == "arguments" and r.get("name") == "track_parcel"
                for c, r in reg.tools(call_id).items()
                if c not in known
            ),
            30,
            "the slow tool running in the holder",
        )
    seen_at = float(reg.call(call_id)["seen_at"])
    killed_at = time.time()
    os.kill(holder, sig)
    info = wait_until(
        lambda: reg.attached_after(call_id, epoch, holder), 10 * ttl + 30, "a new holder"
    )
    row: dict[str, Any] = {
        "kill": n + 1,
        "inflight": inflight,
        "failover_s": float(info["attached_at"]) - killed_at,
        "claim_s": float(info["claimed_at"]) - killed_at,
        "attach_s": float(info["attached_at"]) - float(info["claimed_at"]),
        "epochs": int(info["epoch"]) - epoch,
        "renewed_s": killed_at - seen_at,  # the holder's last renewal, before the kill
    }
    reports = wait_until(
        lambda: [
            r
            for r in reg.reports(call_id, "calls_possibly_lost")
            if r["epoch"] == int(info["epoch"])
        ],
        10,
        "the new holder's report",
    )
    row["gap_s"] = reports[0]["gap_seconds"]
    row["handover"] = reports[0]["handover"]
    row["rerun"] = len(reports[0]["rerun"])
    if pending is not None:
        answer = pending.result(timeout=60)
        row["answered_s"] = time.time() - killed_at
        row["answer_ok"] = answer.startswith("Tool results: track_parcel -> {")
    started = time.monotonic()
    after = browser.ask('lookup_order({"order_id": 7})', timeout=30)
    row["next_round_s"] = time.monotonic() - started
    row["next_round_ok"] = after.startswith("Tool results: lookup_order -> {")
    row["connected"] = browser.connected()
    app.wait_ready(120)  # gunicorn replaced the killed worker; all check in again
    return row


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def check_creates(record: dict[str, Any]) -> dict[str, int]:
    creates = [
        e
        for e in record["client_events"]
        if e.get("type") == "response.create"
        and TICKET_KEY in ((e.get("response") or {}).get("metadata") or {})
    ]
    ids = [e["event_id"] for e in creates]
    tickets = [e["response"]["metadata"][TICKET_KEY] for e in creates]
    return {
        "sideband_creates": len(creates),
        "replayed_creates": (len(ids) - len(set(ids))) + (len(tickets) - len(set(tickets))),
        "creating_workers": len({i.split("_")[1] for i in ids}),
    }


def main() -> int:
    args = parse_args()
    missing = redis_server_missing()
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    out = result_path(args.name, "failover")
    tmp = Path(tempfile.mkdtemp(prefix="failover-"))
    started = time.monotonic()
    redis = RedisServer(tmp)
    emulator = EmulatorServer(tmp)
    app = flask_app(
        redis, emulator, tmp, workers=args.workers, lease_ttl=args.ttl,
        SHOP_CARRIER_SECONDS=str(args.carrier_seconds),
    )  # fmt: skip
    server = app.server
    rows: list[dict[str, Any]] = []
    sig = signal.Signals[f"SIG{args.signal}"]
    lt = LoopThread("bench-browser").start()
    browser = None
    try:
        app.wait_ready(120)
        browser = Browser(lt, app.url)
        browser.start_call()
        assert browser.ask('lookup_order({"order_id": 7})').startswith("Tool results")
        for n in range(args.kills):
            inflight = (n + 1) % args.inflight_every == 0
            row = one_kill(app, browser, n, inflight, args.ttl, sig)
            rows.append(row)
            print(
                f"SIG{args.signal} {n + 1:2d}/{args.kills}: failover {row['failover_s']:.2f}s "
                f"(claim {row['claim_s']:.2f} + attach {row['attach_s']:.3f})"
                + (f", in-flight tool answered {row['answered_s']:.2f}s" if inflight else ""),
                file=sys.stderr,
            )
        record = emulator.call(browser.call_id)
        creates = check_creates(record)
        rejections = int(record["counters"].get("rejections", 0))
        status, _, _ = app.hangup(browser)
        browser.wait_ended()
        ended_ok = status == 200 and emulator.call(browser.call_id)["closed"]
    finally:
        if browser is not None:
            browser.close()
        lt.stop()
        server.stop()
        emulator.stop()
        redis.stop()

    failover = [r["failover_s"] for r in rows]
    result = {
        "bench": "failover",
        "machine": machine_info(),
        "config": {
            "kills": args.kills,
            "workers": args.workers,
            "lease_ttl_s": args.ttl,
            "tick_s": args.ttl / 4,
            "inflight_every": args.inflight_every,
            "carrier_seconds": args.carrier_seconds,
            "signal": f"SIG{args.signal}",
        },
        "failover_s": summary(failover),
        "claim_s": summary([r["claim_s"] for r in rows]),
        "attach_s": summary([r["attach_s"] for r in rows]),
        "gap_s": summary([r["gap_s"] for r in rows]),
        "answered_s": summary([r["answered_s"] for r in rows if "answered_s" in r]),
        "next_round_s": summary([r["next_round_s"] for r in rows]),
        "bound_s": round(max(failover), 3) if failover else None,
        "expected_bound_s": f"lease TTL + tick + attach = {args.ttl} + {args.ttl / 4} + ~0.05",
        "all_inflight_answered": all(r.get("answer_ok", True) for r in rows),
        "all_next_rounds_answered": all(r["next_round_ok"] for r in rows),
        "browser_connected_throughout": all(r["connected"] for r in rows),
        "extra_epochs": sum(r["epochs"] - 1 for r in rows),
        # one follow-up per tool round: the first question, each round after a kill, and
        # each in-flight question (answered by the drained or the new holder, never both)
        "expected_creates": 1 + len(rows) + sum(r["inflight"] for r in rows),
        "handovers": sorted({r["handover"] for r in rows}),
        **creates,
        "rejections": rejections,
        "hangup_ended_call": ended_ok,
        "wall_s": round(time.monotonic() - started, 1),
        "rows": [{k: _round(v) for k, v in r.items()} for r in rows],
    }
    path = write_json(out.stem, result, out.parent)
    cols = [("what", "what"), ("n", "n"), ("min", "min"), ("p50", "p50"), ("p90", "p90"),
            ("max", "max"), ("mean", "mean")]  # fmt: skip
    print(
        table(
            [
                {"what": k, **result[k]}
                for k in ("failover_s", "claim_s", "attach_s", "gap_s", "answered_s")
            ],
            cols,
        )
    )
    print(
        f"replayed creates {creates['replayed_creates']}, sideband creates "
        f"{creates['sideband_creates']} for {result['expected_creates']} tool rounds, "
        f"rejections {rejections}, "
        f"browser connected throughout: {result['browser_connected_throughout']}, "
        f"in-flight answered: {result['all_inflight_answered']}, wall {result['wall_s']} s "
        f"-> {path} ({fmt(result['bound_s'])} s worst)"
    )
    ok = (
        result["all_inflight_answered"]
        and result["all_next_rounds_answered"]
        and result["browser_connected_throughout"]
        and creates["replayed_creates"] == 0
        and creates["sideband_creates"] == result["expected_creates"]
        and ended_ok
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
