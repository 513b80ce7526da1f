#!/usr/bin/env python
"""Bench (not a test): what typed events cost per event, against raw dicts.

    python bench/events_bench.py --name events_bench   # ~2 min
    python bench/events_bench.py --quick               # ~30 s, a smoke run

Prints a table and writes ``bench/results/local/events_bench.json`` and ``.png``
(gitignored), or ``bench/results/NAME.json`` and ``NAME.png`` - the committed result
the READMEs quote - with ``--name``.

What is measured
----------------
1. A real event mix: one WebSocket session against the emulator (in this process; only
   the server's record of what it sent is used) - input transcription of a spoken turn,
   text answers, audio answers (base64 deltas), a tool round. Every server event it sent
   is kept as the dict the client would decode.
2. For each event type, the per-event time (p50 over batches of ``--batch`` calls, each
   batch timed with ``perf_counter_ns``; the variants interleaved batch by batch, so
   their ratios come from one run on one machine state) of one event's way from the
   message text to a no-op ``"*"`` callback, in the two parts two threads do:
   - ``loop``, the loop thread's part that depends on the event or on typing:
     ``ev.decode(text)`` and ``Dispatcher.item(event)`` - the hand-over, where the
     pre-check (``rtclient.core.event_check``) runs and makes a model built on first
     read (``rtclient.core.lazy_model``) when a typed reader wants the type. The loop
     thread's other work per event (the frame, the core, the trace) is the same for
     every variant and left out, so ``loop`` ratios here are upper bounds. The garbage
     collector is off while a batch is timed: a collection that another variant's
     garbage made due is not this one's (part 4 has the collector's share);
   - ``disp``, the dispatcher's whole work for the item: ``Dispatcher._handle(item)``
     (the step, the subscriptions, the callback);
   and their sum (``raw_us_p50``... with no suffix), for these subscribers:
   - ``raw``: ``on("*", cb, raw=True)``: the dict as received;
   - ``typed``: ``on("*", cb)``: what rtclient does now;
   - ``typed+read``: the same, ``cb`` reads the model (the build happens in ``cb``);
   - ``eager`` and ``eager+read``: typed as the release before last did it, the model's
     validator on the dispatcher for every event (its ``to_model``, swapped in);
   - ``deferred``: a lazy model with no pre-check at all - the floor of "validate on
     first read", which would let a malformed event through as a model (not shipped).
   and, per event alone: ``check`` (the pre-check), ``model`` (the validator),
   ``json`` (the validator's ``validate_json`` on the message text), ``union(disc)``
   (one ``pydantic.TypeAdapter`` over the whole server union with
   ``Field(discriminator="type")``), ``union(plain)`` (the ``openai`` union as
   shipped), ``json.loads`` and ``loads`` (the loop thread's decoder before and now:
   ``rtclient.core.events.loads``, msgspec).
3. One-time costs, each in a fresh interpreter: ``import openai.types.realtime``;
   preparing one event type and all of them (validators and pre-checks: what the first
   typed ``on()`` / ``events()`` does on the caller's thread); building the
   discriminated union adapter instead.
4. The whole client process per event in a real session (:func:`session_cost`): two
   WebSocket clients, one raw and one typed ``"*"`` subscriber, taking turns at audio
   answers from an emulator in its own process, under ``time.process_time()`` - every
   thread's work, the collector's included.

The machine has 2 cores shared with other work: figures move by +-20% between runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
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
    EmulatorProcess,
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
from rtclient.core.event_models import union_members


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


def eager_to_model(event: Any) -> Any:
    """``to_model`` as the previous release had it: the model's validator, every event."""
    return ev.event_models()[event["type"]].__pydantic_validator__.validate_python(event)


def deferred_parsers() -> dict[str, Callable[[Any], Any]]:
    """A lazy model for every event, no pre-check: what "validate on first read" alone
    would cost (a malformed event would reach typed subscribers as a model)."""
    from rtclient.core.lazy_model import lazy_class, plain_fields

    return {
        kind: lazy_class(
            model, model.__pydantic_validator__.validate_python,
            plain_fields(model.__pydantic_core_schema__),
        )
        for kind, model in ev.event_models().items()
    }  # fmt: skip


def read(event: Any) -> None:
    """A callback that reads the model (builds it), as most real ones would."""
    getattr(event, "model_fields_set", None)


# The typed-dispatch variants, each timed as the two threads' parts of one event.
DELIVERY = ("raw", "typed", "read", "eager", "eager_read", "deferred")
SINGLES = ("check", "model", "json", "disc", "plain", "json_loads", "loads")  # one step alone


class Delivery:
    """One event's way from the message text to a no-op ``"*"`` callback, in the two
    parts the two threads do: ``loop(text)`` - decode and hand-over
    (``Dispatcher.item``: the pre-check and the lazy model, when a typed reader wants
    the type) - and ``dispatch(item)`` (``Dispatcher._handle``: the step, the
    subscriptions, the callback). The loop thread's other per-event work (the frame,
    the core, the trace) is the same for every variant and left out, so ``loop``
    ratios here are upper bounds."""

    def __init__(
        self,
        client: RealtimeClient,
        to_model: Callable[[Any], Any] | None = None,
        checks: dict[str, Callable[[Any], Any]] | None = None,
    ) -> None:
        self.client = client
        dispatcher = client._dispatcher
        if to_model is not None or checks is not None:  # another release's parse
            dispatcher.catalog = dataclasses.replace(dispatcher.catalog, checks=checks or {})
        self.to_model = to_model
        self.item = dispatcher.item
        self.handle = dispatcher._handle

    def loop_us(self, text: str, batch: int) -> float:
        item, decode = self.item, ev.decode
        gc.disable()  # a collection due to another variant's garbage is not this one's
        try:
            start = time.perf_counter_ns()
            for _ in range(batch):
                item(decode(text))
            return (time.perf_counter_ns() - start) / batch / 1000
        finally:
            gc.enable()

    def dispatch_us(self, text: str, batch: int) -> float:
        items = [self.item(ev.decode(text)) for _ in range(batch)]  # fresh: built unread
        handle, shipped = self.handle, ev.to_model
        if self.to_model is not None:
            ev.to_model = self.to_model
        gc.disable()
        try:
            start = time.perf_counter_ns()
            for item in items:
                handle(item)
            return (time.perf_counter_ns() - start) / batch / 1000
        finally:
            gc.enable()
            ev.to_model = shipped


def measure(
    events: list[dict[str, Any]], batch: int, per_type: int, rounds: int
) -> list[dict[str, Any]]:
    import pydantic
    from openai.types.realtime import RealtimeServerEvent

    from rtclient.core.event_check import compile_check

    def client(callback: Callable[[Any], None], raw: bool = False) -> RealtimeClient:
        made = RealtimeClient(api_key="sk-bench", base_url="http://127.0.0.1:9/v1")
        made.on("*", callback, raw=raw)
        return made

    def noop(event: object) -> None:
        pass

    ev.prepare_models(["*"])
    deferred = deferred_parsers()
    deliveries = {
        "raw": Delivery(client(noop, raw=True)),
        "typed": Delivery(client(noop)),
        "read": Delivery(client(read)),
        "eager": Delivery(client(noop), to_model=eager_to_model),
        "eager_read": Delivery(client(read), to_model=eager_to_model),
        "deferred": Delivery(client(noop), checks=deferred),
    }
    members = union_members(RealtimeServerEvent)
    discriminated: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
        typing.Annotated[typing.Union[tuple(members)], pydantic.Field(discriminator="type")]  # noqa: UP007
    )
    plain: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeServerEvent)
    counts = Counter(e["type"] for e in events)
    rows = []
    try:
        for kind, count in sorted(counts.items(), key=lambda kv: -kv[1]):
            sample = [e for e in events if e["type"] == kind][:per_type]
            model = ev.event_models().get(kind)
            check = compile_check(model.__pydantic_core_schema__) if model else None
            times: dict[str, list[float]] = {
                f"{v}_{part}": [] for v in DELIVERY for part in ("loop", "disp")
            }
            times.update({k: [] for k in SINGLES})
            order = list(deliveries.items())
            for _ in range(rounds):
                for event in sample:
                    text = json.dumps(event)  # as received
                    order.append(order.pop(0))  # each variant first in turn: no order effect
                    for variant, delivery in order:
                        if model is None and variant not in ("raw", "typed", "read"):
                            continue
                        times[f"{variant}_loop"].append(delivery.loop_us(text, batch))
                        times[f"{variant}_disp"].append(delivery.dispatch_us(text, batch))
                    times["json_loads"].append(per_call_us(json.loads, text, batch))
                    times["loads"].append(per_call_us(ev.loads, text, batch))
                    if model is None:
                        continue
                    if check is not None:
                        times["check"].append(per_call_us(check, event, batch))
                    times["model"].append(per_call_us(eager_to_model, event, batch))
                    validate_json = model.__pydantic_validator__.validate_json
                    times["json"].append(per_call_us(validate_json, text, batch))
                    times["disc"].append(per_call_us(discriminated.validate_python, event, batch))
                    slow = max(1, batch // 4)
                    times["plain"].append(per_call_us(plain.validate_python, event, slow))
            row: dict[str, Any] = {
                "type": kind,
                "count": count,
                "bytes_p50": percentile([len(json.dumps(e)) for e in sample], 50),
                **{f"{k}_us_p50": percentile(v, 50) for k, v in times.items()},
            }
            for variant in DELIVERY:
                loop, disp = row[f"{variant}_loop_us_p50"], row[f"{variant}_disp_us_p50"]
                row[f"{variant}_us_p50"] = None if loop is None else loop + disp
            for variant in DELIVERY[1:]:
                for part in ("", "_loop", "_disp"):
                    value = row[f"{variant}{part}_us_p50"]
                    base = row[f"raw{part}_us_p50"]
                    row[f"{variant}{part}_x_raw"] = None if value is None else value / base
            rows.append(row)
    finally:
        for delivery in deliveries.values():
            delivery.client.close()
    return rows


def session_cost(rounds: int, responses: int) -> dict[str, Any]:
    """The whole client process's CPU per event in a real session: two WebSocket
    clients against an emulator in its own process (its CPU is not counted), one with
    a raw ``"*"`` subscriber and one with a typed one, taking turns - ``responses``
    audio answers each per round - under ``time.process_time()``: the frames, the
    decode, the core, the hand-over, the dispatcher and the callbacks, on every thread
    of the process."""

    def noop(event: object) -> None:
        pass

    per_event: dict[str, list[float]] = {"raw": [], "typed": []}
    with EmulatorProcess(pace={"delay": 0.0, "deltas": 40}) as emulator:
        clients: dict[str, RealtimeClient] = {}
        try:
            for variant in per_event:
                client = RealtimeClient(
                    api_key="sk-bench", base_url=emulator.url, transport="websocket",
                    loopback_only=True,
                )  # fmt: skip
                clients[variant] = client
                client.on("*", noop, raw=variant == "raw")
                client.connect()
                client.request_response(output_modalities=["audio"]).result(30)  # warm
            for _ in range(rounds):
                for variant, client in clients.items():
                    events = client.stats()["events_received"]
                    started = time.process_time()
                    for _ in range(responses):
                        client.request_response(output_modalities=["audio"]).result(30)
                    spent = time.process_time() - started
                    events = client.stats()["events_received"] - events
                    per_event[variant].append(spent / events * 1e6)
        finally:
            for client in clients.values():
                client.close()
    raw, typed = (percentile(per_event[v], 50) for v in ("raw", "typed"))
    return {
        "rounds": rounds,
        "responses": responses,
        "raw_us": raw,
        "typed_us": typed,
        "typed_x_raw": typed / raw,
        "per_round_us": per_event,
    }


SETUP = {
    "import_openai_s": "import openai.types.realtime",
    "first_typed_on_s": (
        "from rtclient.core import events as ev; ev.prepare_models(['response.done'])"
    ),
    "all_types_s": "from rtclient.core import events as ev; ev.prepare_models(['*'])",
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
        "all_types_s": "import openai.types.realtime",
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
    parser.add_argument(
        "--replot", type=Path, metavar="JSON", help="only redraw the plot of a results file"
    )
    add_result_options(parser, "events_bench")
    args = parser.parse_args()
    if args.replot is not None:
        payload = json.loads(args.replot.read_text())
        plot(payload["per_type"], payload["summary"], args.replot.with_suffix(".png"))
        return 0
    out = result_path(args.name, "events_bench")
    quiet_logs()
    rounds = args.rounds or (2 if args.quick else 6)
    info = machine_info()
    started = time.monotonic()
    events = record_mix(rounds)
    setup = setup_costs(1 if args.quick else 3)
    rows = measure(events, args.batch, per_type=10 if args.quick else 40, rounds=3)
    session = session_cost(rounds=3 if args.quick else 15, responses=5 if args.quick else 20)
    total = sum(r["count"] for r in rows)

    def mix(key: str) -> float:
        return float(sum(r[key] * r["count"] for r in rows if r[key] is not None) / total)

    done = next(r for r in rows if r["type"] == "response.done")
    summary: dict[str, Any] = {"events": total, "types": len(rows)}
    for single in ("json_loads", "loads"):  # the loop thread's decoder, before and now
        summary[f"{single}_us_mean"] = mix(f"{single}_us_p50")
    for part in PARTS:
        for variant in DELIVERY:
            summary[f"{variant}{part}_us_mean"] = mix(f"{variant}{part}_us_p50")
        for variant in TYPED:
            summary[f"mix_{variant}{part}_x_raw"] = (
                summary[f"{variant}{part}_us_mean"] / summary[f"raw{part}_us_mean"]
            )
            summary[f"done_{variant}{part}_x_raw"] = done[f"{variant}{part}_x_raw"]
    print(table(rows, COLUMNS))
    for part, name in PARTS.items():
        print(
            f"\n{name}: mix of {total} events, us/event (x raw): "
            f"raw {summary[f'raw{part}_us_mean']:.2f}, "
            + ", ".join(
                f"{v} {summary[f'{v}{part}_us_mean']:.2f} ({summary[f'mix_{v}{part}_x_raw']:.2f}x)"
                for v in TYPED
            )
        )
        print(
            f"{name}: response.done, us (x raw): raw {done[f'raw{part}_us_p50']:.2f}, "
            + ", ".join(
                f"{v} {done[f'{v}{part}_us_p50']:.2f} ({done[f'{v}{part}_x_raw']:.2f}x)"
                for v in TYPED
            )
        )
    print(
        f"whole process, real session: raw {session['raw_us']:.1f} us/event, typed "
        f"{session['typed_us']:.1f} ({session['typed_x_raw']:.2f}x)"
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
            "session": session,
            "setup": setup,
            "per_type": rows,
        },
        out.parent,
    )
    png = path.with_suffix(".png")
    plot(rows, summary, png)
    print(f"wrote {path} and {png}")
    return 0


TYPED = DELIVERY[1:]  # the typed variants, each against raw
# The parts of a delivery: both threads, the loop thread's, the dispatcher's.
PARTS = {"": "both threads", "_loop": "loop thread", "_disp": "dispatcher"}
COLUMNS = [
    ("type", "event type"),
    ("count", "n"),
    ("bytes_p50", "bytes"),
    ("raw_us_p50", "raw us"),
    ("typed_us_p50", "typed us"),
    ("typed_x_raw", "typed x raw"),
    ("raw_loop_us_p50", "raw loop us"),
    ("typed_loop_us_p50", "typed loop us"),
    ("typed_loop_x_raw", "loop x raw"),
    ("raw_disp_us_p50", "raw disp us"),
    ("typed_disp_us_p50", "typed disp us"),
    ("typed_disp_x_raw", "disp x raw"),
    ("read_us_p50", "typed+read us"),
    ("eager_us_p50", "eager us"),
    ("eager_x_raw", "eager x raw"),
    ("deferred_us_p50", "deferred us"),
    ("check_us_p50", "check us"),
    ("model_us_p50", "model us"),
    ("json_us_p50", "json us"),
    ("json_loads_us_p50", "json.loads us"),
    ("loads_us_p50", "loads us"),
]


def plot(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    """Per event type: us per event (both threads) for raw, eager (before), typed and
    typed+read; and typed's multiple of raw - per thread and both - against the 2x line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["eager_us_p50"] is not None]
    names = [f"{r['type']} ({r['count']})" for r in shown]
    fig, (left, right) = plt.subplots(1, 2, figsize=(16, 0.42 * len(shown) + 2.5), sharey=True)
    colour = {"raw": "tab:grey", "eager": "tab:red", "typed": "tab:green",
              "read": "tab:olive", "deferred": "tab:blue"}  # fmt: skip
    bars = [("raw", "raw"), ("eager", "eager (before)"), ("typed", "typed (now)"),
            ("read", "typed + callback reads it")]  # fmt: skip
    height = 0.8 / len(bars)
    for i, (key, label) in enumerate(bars):
        ys = [n + (i - 1.5) * height for n in range(len(shown))]
        values = [r[f"{key}_us_p50"] for r in shown]
        left.barh(ys, values, height=height, label=label, color=colour[key])
    left.set_xscale("log")
    left.set_xlabel("us per event, loop thread + dispatcher (p50, log scale)")
    left.set_yticks(range(len(shown)))
    left.set_yticklabels(names, fontsize=8)
    left.invert_yaxis()
    left.legend(fontsize=8)
    left.grid(True, axis="x", alpha=0.3)
    left.set_title(
        f"mix of {summary['events']} events: raw {summary['raw_us_mean']:.2f} us, "
        f"eager {summary['eager_us_mean']:.2f}, typed {summary['typed_us_mean']:.2f}",
        fontsize=10,
    )
    lines = (("eager", "eager (before), both threads", "s", "tab:red"),
             ("typed", "typed (now), both threads", "o", "tab:green"),
             ("typed_loop", "typed, loop thread", ">", "tab:cyan"),
             ("typed_disp", "typed, dispatcher", "<", "tab:purple"))  # fmt: skip
    for key, label, marker, color in lines:
        xs = [r[f"{key}_x_raw"] for r in shown]
        right.plot(xs, range(len(shown)), marker, label=label, color=color)
    right.axvline(2.0, color="grey", linestyle="--", label="2x raw")
    right.set_xscale("log")
    ticks = [1, 1.5, 2, 3, 5, 10, 20]
    right.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    right.minorticks_off()
    right.set_xlabel("x raw (same run)")
    right.legend(fontsize=8)
    right.grid(True, axis="x", alpha=0.3)
    right.set_title(
        f"typed x raw, mix / response.done: both {summary['mix_typed_x_raw']:.2f} / "
        f"{summary['done_typed_x_raw']:.2f}, loop {summary['mix_typed_loop_x_raw']:.2f} / "
        f"{summary['done_typed_loop_x_raw']:.2f}, dispatcher "
        f"{summary['mix_typed_disp_x_raw']:.2f} / {summary['done_typed_disp_x_raw']:.2f}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _version(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)


if __name__ == "__main__":
    sys.exit(main())
