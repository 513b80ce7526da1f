#!/usr/bin/env python
"""Bench (not a test): what typed events cost per event, against raw dicts.

    python bench/events_bench.py --name events_bench   # ~1-2 min
    python bench/events_bench.py --quick               # ~20 s, a smoke run

Prints a table and writes ``bench/results/local/events_bench.json`` (gitignored), or
``bench/results/NAME.json`` - the committed result the READMEs quote - with ``--name``.

What is measured
----------------
1. A real event mix: one WebSocket session against the emulator (in this process; only
   the server's record of what it sent is used) - input transcription of a spoken turn,
   text answers, audio answers (base64 deltas), a tool round. Every server event it sent
   is kept as the dict the client would decode.
2. For each event type, the per-event time (p50 over batches of ``--batch`` calls, each
   batch timed with ``perf_counter_ns``) of:
   - ``raw``: ``RealtimeClient._dispatch(event)`` - the dispatcher thread's whole work
     for one event - with one ``on("*", cb, raw=True)`` subscriber (a no-op);
   - ``typed``: the same with one ``on("*", cb)`` subscriber: the event is parsed into
     its ``openai.types.realtime`` model first;
   - ``model``: the parse alone, as rtclient does it: the event's own model class,
     picked by ``type`` (``Model.model_validate``);
   - ``union(disc)``: one ``pydantic.TypeAdapter`` over the whole server event union with
     ``Field(discriminator="type")``;
   - ``union(plain)``: the ``openai`` union as shipped (pydantic tries the members).
3. One-time costs, each in a fresh interpreter: ``import openai.types.realtime``;
   building the validators of one model and of all of them (what the first typed
   ``on()`` / ``events()`` does on the caller's thread); building the discriminated
   union adapter instead.

The machine has 2 cores shared with other work: figures move by +-20% between runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import typing
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    add_result_options,
    machine_info,
    percentile,
    quiet_logs,
    result_path,
    table,
    write_json,
)

from rtclient import RealtimeClient, tool
from rtclient.core import events as ev


@tool
def get_weather(city: str = "Paris") -> dict[str, Any]:
    """Current weather for a city."""
    return {"city": city, "temp_c": 21}


def record_mix(rounds: int) -> list[dict[str, Any]]:
    """Run a session against the emulator; return every server event it sent."""
    from rtclient.emulator import Emulator, Pace

    with Emulator(turn_detection=None, pace=Pace(delay=0.0, deltas=8)) as emulator:
        client = RealtimeClient(
            api_key="sk-bench", base_url=emulator.url, transport="websocket", tools=[get_weather]
        ).connect()
        try:
            client.set_input_transcription("gpt-4o-transcribe")
            vad = {"type": "server_vad", "create_response": False, "interrupt_response": False}
            client.update_session(audio={"input": {"turn_detection": vad}})
            session = emulator.sessions[-1]
            for n in range(rounds):
                session.simulate_speech(f"what is the weather like in Oslo today {n}")
                client.ask(f"hello {n}", timeout=30)
                client.send_text("tell me", respond=False)
                client.request_response(output_modalities=["audio"]).result(30)
                client.ask('use get_weather({"city": "Oslo"})', timeout=30)
            events = session.server_events
        finally:
            client.close()
    return [e for e in events if isinstance(e.get("type"), str)]


def per_call_us(fn: Callable[[Any], object], arg: Any, batch: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(batch):
        fn(arg)
    return (time.perf_counter_ns() - start) / batch / 1000


def _members(union: Any) -> list[Any]:
    args = typing.get_args(union)
    if args and typing.get_origin(union) is typing.Annotated:
        return _members(args[0])
    return [m for a in args for m in (_members(a) if typing.get_args(a) else [a])]


def measure(
    events: list[dict[str, Any]], batch: int, per_type: int, rounds: int
) -> list[dict[str, Any]]:
    import pydantic
    from openai.types.realtime import RealtimeServerEvent

    raw_client = RealtimeClient(api_key="sk-bench", base_url="http://127.0.0.1:9/v1")
    typed_client = RealtimeClient(api_key="sk-bench", base_url="http://127.0.0.1:9/v1")

    def noop(event: object) -> None:
        pass

    raw_client.on("*", noop, raw=True)
    typed_client.on("*", noop)
    typed_client.events(timeout=0).close()  # builds every model's validator now
    members = _members(RealtimeServerEvent)
    discriminated: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
        typing.Annotated[typing.Union[tuple(members)], pydantic.Field(discriminator="type")]  # noqa: UP007
    )
    plain: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeServerEvent)
    counts = Counter(e["type"] for e in events)
    rows = []
    try:
        for kind, count in sorted(counts.items(), key=lambda kv: -kv[1]):
            sample = [e for e in events if e["type"] == kind][:per_type]
            has_model = kind in ev.event_models()
            times: dict[str, list[float]] = {
                k: [] for k in ("raw", "typed", "model", "disc", "plain")
            }
            for _ in range(rounds):
                for event in sample:
                    times["raw"].append(per_call_us(raw_client._dispatch, event, batch))
                    times["typed"].append(per_call_us(typed_client._dispatch, event, batch))
                    if has_model:
                        times["model"].append(per_call_us(ev.to_model, event, batch))
                        times["disc"].append(
                            per_call_us(discriminated.validate_python, event, batch)
                        )
                        slow = max(1, batch // 4)
                        times["plain"].append(per_call_us(plain.validate_python, event, slow))
            rows.append(
                {
                    "type": kind,
                    "count": count,
                    "bytes_p50": percentile([len(json.dumps(e)) for e in sample], 50),
                    **{f"{k}_us_p50": percentile(v, 50) for k, v in times.items()},
                }
            )
    finally:
        raw_client.close()
        typed_client.close()
    return rows


SETUP = {
    "import_openai_s": "import openai.types.realtime",
    "first_typed_on_s": (
        "from rtclient.core import events as ev; ev.prepare_models(['response.done'])"
    ),
    "all_validators_s": "from rtclient.core import events as ev; ev.prepare_models(['*'])",
    "discriminated_adapter_s": (
        "import typing, pydantic\n"
        "from rtclient.core import events as ev\n"
        "ms = list(ev.event_models().values())\n"
        "pydantic.TypeAdapter(typing.Annotated[typing.Union[tuple(ms)],"
        " pydantic.Field(discriminator='type')])"
    ),
}


def setup_costs(repeats: int) -> dict[str, float | None]:
    """Each step in a fresh interpreter, after the steps it needs (untimed)."""
    script = (
        "import sys, time\n"
        "setup, step = sys.argv[1], sys.argv[2]\n"
        "exec(setup)\n"
        "t = time.perf_counter()\n"
        "exec(step)\n"
        "print(time.perf_counter() - t)\n"
    )
    needs = {
        "import_openai_s": "import rtclient",
        "first_typed_on_s": "import openai.types.realtime",
        "all_validators_s": "import openai.types.realtime",
        "discriminated_adapter_s": "import openai.types.realtime",
    }
    out: dict[str, float | None] = {}
    for name, step in SETUP.items():
        runs = [
            float(
                subprocess.run(
                    [sys.executable, "-c", script, needs[name], step],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=120,
                ).stdout
            )
            for _ in range(repeats)
        ]
        out[name] = percentile(runs, 50)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None, help="conversation rounds recorded")
    parser.add_argument("--batch", type=int, default=20, help="calls per timed batch")
    add_result_options(parser, "events_bench")
    args = parser.parse_args()
    out = result_path(args.name, "events_bench")
    quiet_logs()
    rounds = args.rounds or (2 if args.quick else 6)
    info = machine_info()
    started = time.monotonic()
    events = record_mix(rounds)
    setup = setup_costs(1 if args.quick else 3)
    rows = measure(events, args.batch, per_type=10 if args.quick else 40, rounds=3)
    total = sum(r["count"] for r in rows)

    def mix(key: str) -> float:
        return float(sum(r[key] * r["count"] for r in rows if r[key] is not None) / total)

    summary = {
        "events": total,
        "types": len(rows),
        "raw_us_mean": mix("raw_us_p50"),
        "typed_us_mean": mix("typed_us_p50"),
        "parse_overhead_us_mean": mix("typed_us_p50") - mix("raw_us_p50"),
    }
    print(
        table(
            rows,
            [
                ("type", "event type"),
                ("count", "n"),
                ("bytes_p50", "bytes"),
                ("raw_us_p50", "raw us"),
                ("typed_us_p50", "typed us"),
                ("model_us_p50", "model us"),
                ("disc_us_p50", "union(disc) us"),
                ("plain_us_p50", "union(plain) us"),
            ],
        )
    )
    print(
        f"\nmix of {total} events: raw dispatch {summary['raw_us_mean']:.2f} us/event, "
        f"typed {summary['typed_us_mean']:.2f} us/event "
        f"(+{summary['parse_overhead_us_mean']:.2f} us)"
    )
    print("one-time, fresh interpreter: " + ", ".join(f"{k} {v:.3f}" for k, v in setup.items()))
    path = write_json(
        out.stem,
        {
            "machine": info,
            "openai": _version("openai"),
            "pydantic": _version("pydantic"),
            "threads": threading.active_count(),
            "batch": args.batch,
            "seconds": round(time.monotonic() - started, 1),
            "summary": summary,
            "setup": setup,
            "per_type": rows,
        },
        out.parent,
    )
    print(f"wrote {path}")
    return 0


def _version(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)


if __name__ == "__main__":
    sys.exit(main())
