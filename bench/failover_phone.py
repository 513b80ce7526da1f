"""Failover of a phone call: how long it has no sideband after its worker is killed.

``bench/failover.py``'s deployment - Debian's ``redis-server``, the emulator in its own
process (server VAD on: a caller is heard only through it), gunicorn serving
``examples/flask_app.py`` with ``--workers`` processes - and one phone call instead of
a browser's: the emulator rings it (a signed webhook to ``POST /webhooks/openai``), a
worker accepts it and hands it to the shared registry (``CallRegistry.adopt_call``).
Each round: ``SIGKILL`` the worker holding the call's sideband and time

- ``failover_s``: from the kill to the new holder's sideband ready (``attached_at``);
- ``claim_s`` and ``attach_s``: the lease claimed, then the sideband ready;
- ``next_round_s``: the caller then asks a question whose tool the new holder runs
  (emulated speech, server VAD, the tool's output on the wire).

After the last kill, from the emulator's record of the call: the greeting asked for
once, every ``response.create`` unique, 0 active-response rejections; then the caller
hangs up and the registry forgets the call.

    python bench/failover_phone.py --name failover_phone   # 10 SIGKILLs, TTL 2 s
    python bench/failover_phone.py --kills 3               # -> results/local/
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))  # the cluster harness, the phone helpers

from _common import (  # noqa: E402
    add_result_options,
    fmt,
    machine_info,
    positive_float,
    positive_int,
    result_path,
    table,
    write_json,
)
from cluster import (  # noqa: E402
    App,
    EmulatorServer,
    RedisServer,
    flask_app,
    outputs,
    redis_server_missing,
    wait_until,
)
from failover import TICKET_KEY, summary  # noqa: E402
from phone import control, dial, record  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=positive_int, default=10)
    parser.add_argument("--ttl", type=positive_float, default=2.0, help="lease TTL, s")
    parser.add_argument("--workers", type=positive_int, default=3)
    add_result_options(parser, "failover_phone")
    return parser.parse_args()


def caller_asks(emulator: EmulatorServer, call_id: str, question: str) -> str:
    """The caller says ``question``; the tool output the app sent for it."""
    before = len(outputs(emulator.call(call_id)["client_events"]))
    status, body = control(emulator.control, "POST", f"/sip/calls/{call_id}/speech",
                           {"text": question})  # fmt: skip
    assert status == 200, body
    found = wait_until(
        lambda: (o := outputs(emulator.call(call_id)["client_events"]))[before:] and o,
        30,
        f"the app's answer to {question!r}",
    )
    return str(found[before]["item"]["output"])


def one_kill(
    app: App, emulator: EmulatorServer, call_id: str, n: int, ttl: float
) -> dict[str, Any]:
    reg = app.registry
    reg.wait_settled(call_id)
    holder = reg.holder_pid(call_id)
    epoch = int(reg.call(call_id)["epoch"])
    killed_at = time.time()
    os.kill(holder, signal.SIGKILL)
    info = wait_until(
        lambda: reg.attached_after(call_id, epoch, holder), 10 * ttl + 30, "a new holder"
    )
    row: dict[str, Any] = {
        "kill": n + 1,
        "failover_s": float(info["attached_at"]) - killed_at,
        "claim_s": float(info["claimed_at"]) - killed_at,
        "attach_s": float(info["attached_at"]) - float(info["claimed_at"]),
        "epochs": int(info["epoch"]) - epoch,
    }
    started = time.monotonic()
    answer = caller_asks(emulator, call_id, f'lookup_order({{"order_id": {7 + n % 2}}})')
    row["next_round_s"] = time.monotonic() - started
    row["next_round_ok"] = f'"order_id": {7 + n % 2}' in answer
    row["on_the_line"] = record(emulator.control, call_id)["status"] == "accepted"
    app.wait_ready(120)  # gunicorn replaced the killed worker; all check in again
    return row


def main() -> int:
    args = parse_args()
    missing = redis_server_missing()
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    out = result_path(args.name, "failover_phone")
    tmp = Path(tempfile.mkdtemp(prefix="failover-phone-"))
    started = time.monotonic()
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    redis = RedisServer(tmp)
    emulator = EmulatorServer(tmp, vad=True)
    app = flask_app(
        redis, emulator, tmp, workers=args.workers, lease_ttl=args.ttl,
        OPENAI_WEBHOOK_SECRET=secret,
    )  # fmt: skip
    server = app.server
    rows: list[dict[str, Any]] = []
    try:
        app.wait_ready(120)
        rung = dial(emulator.control, url=f"{app.url}/webhooks/openai", secret=secret)
        call_id = rung["call_id"]
        assert rung["status"] == "accepted", rung
        assert '"order_id": 7' in caller_asks(emulator, call_id, 'lookup_order({"order_id": 7})')
        for n in range(args.kills):
            row = one_kill(app, emulator, call_id, n, args.ttl)
            rows.append(row)
            print(
                f"SIGKILL {n + 1:2d}/{args.kills}: failover {row['failover_s']:.2f}s "
                f"(claim {row['claim_s']:.2f} + attach {row['attach_s']:.3f}), next "
                f"question answered {row['next_round_s']:.2f}s",
                file=sys.stderr,
            )
        events = emulator.call(call_id)["client_events"]
        creates = [e for e in events if e.get("type") == "response.create"]
        greetings = [
            e for e in creates if "Greet" in (e.get("response") or {}).get("instructions", "")
        ]
        tickets = [
            ((e.get("response") or {}).get("metadata") or {}).get(TICKET_KEY) for e in creates
        ]
        rejections = int(emulator.call(call_id)["counters"].get("rejections", 0))
        control(emulator.control, "POST", f"/sip/calls/{call_id}/hangup", {})  # the caller
        forgotten = wait_until(
            lambda: call_id not in app.registry.live() or None, 30, "the registry forgetting it"
        )
    finally:
        server.stop()
        emulator.stop()
        redis.stop()

    failover = [r["failover_s"] for r in rows]
    result = {
        "bench": "failover_phone",
        "machine": machine_info(),
        "config": {
            "kills": args.kills,
            "workers": args.workers,
            "lease_ttl_s": args.ttl,
            "tick_s": args.ttl / 4,
        },
        "failover_s": summary(failover),
        "claim_s": summary([r["claim_s"] for r in rows]),
        "attach_s": summary([r["attach_s"] for r in rows]),
        "next_round_s": summary([r["next_round_s"] for r in rows]),
        "bound_s": round(max(failover), 3) if failover else None,
        "all_next_rounds_answered": all(r["next_round_ok"] for r in rows),
        "caller_on_the_line_throughout": all(r["on_the_line"] for r in rows),
        "extra_epochs": sum(r["epochs"] - 1 for r in rows),
        "greetings": len(greetings),
        "creates": len(creates),
        "replayed_creates": len(tickets) - len(set(tickets)),
        "rejections": rejections,
        "forgotten_after_hangup": bool(forgotten),
        "wall_s": round(time.monotonic() - started, 1),
        "rows": [
            {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows
        ],
    }
    path = write_json(out.stem, result, out.parent)
    cols = [("what", "what"), ("n", "n"), ("min", "min"), ("p50", "p50"), ("p90", "p90"),
            ("max", "max"), ("mean", "mean")]  # fmt: skip
    whats = ("failover_s", "claim_s", "attach_s", "next_round_s")
    print(table([{"what": k, **result[k]} for k in whats], cols))
    print(
        f"greetings {len(greetings)}, creates {len(creates)} (replayed "
        f"{result['replayed_creates']}), rejections {rejections}, caller on the line "
        f"throughout: {result['caller_on_the_line_throughout']}, wall {result['wall_s']} s "
        f"-> {path} ({fmt(result['bound_s'])} s worst)"
    )
    ok = (
        result["all_next_rounds_answered"]
        and result["caller_on_the_line_throughout"]
        and len(greetings) == 1
        and result["replayed_creates"] == 0
        and rejections == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
