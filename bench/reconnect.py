"""reconnect.py - how long a lost session takes to come back, and what comes back.

Each trial is one ``RealtimeClient(reconnect=Reconnect(backoff=0))`` against the emulator
(its own process, the referee) that builds a conversation, loses its session, and is
timed until ``rtclient.reconnected``:

``websocket``      an own WebSocket session with 8 items: a text round, a tool round
                   (call + output), and a spoken turn (server VAD) - the assistant's
                   three answers are speech, restored as their transcripts, the user's
                   speech as its input transcription.
``webrtc``         the same over WebRTC (a new call: SDP, ICE, DTLS, SCTP again).
``websocket-200``  an own WebSocket session holding ~200 items (typed user messages and
                   one answer): what a long conversation costs to restore.

The session is lost the way a server ends one: the emulator is told to close it after
its next event (``close_after_events=0``), the client's next event triggers it, and
the data channel or socket closes under the client. Reported per variant:

* **restore** - from the loss (the client learns of it) to ``rtclient.reconnected``:
  the new connection, its ``session.update``, and every item created and confirmed.
  No backoff: ``backoff=0``, so this is the mechanism's own cost.
* **drop to restored** - from the event that made the server close the session to
  ``rtclient.reconnected`` (adds the close reaching the client).
* **items restored**, and what the referee saw: **replayed creates** (a
  ``response.create`` the new session received before the app asked for anything -
  must be 0 - or one carrying the ``event_id`` of a create the old session received).
  Then the app asks once more in the new session, which must answer.

    python bench/reconnect.py                      # 50 / 50 / 20 trials
    python bench/reconnect.py --trials 10 --long-trials 5
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    API_KEY,
    EmulatorProcess,
    Progress,
    add_result_options,
    http_json,
    machine_info,
    percentile,
    positive_int,
    quiet_logs,
    result_path,
    table,
    write_json,
)

from rtclient import LoopThread, RealtimeClient, Reconnect, tool

SESSION = {
    "output_modalities": ["audio"],
    "audio": {"input": {"transcription": {"model": "whisper-1"}}},
}
LONG_ITEMS = 198  # typed user messages, then one ask: ~200 items
WAIT = 60.0


@tool
def get_weather(city: str = "Oslo") -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class Watch:
    """What a trial waits for, from the client's ``on()`` callbacks (raw dicts)."""

    def __init__(self, client: RealtimeClient) -> None:
        self.sessions: list[str] = []
        self.done: set[str] = set()
        self.reconnected: dict[str, Any] | None = None
        self.reconnected_at = 0.0
        self._changed = threading.Condition()
        client.on("session.created", self._session, raw=True)
        client.on("response.done", self._done, raw=True)
        client.on("rtclient.reconnected", self._reconnected, raw=True)

    def _session(self, event: dict[str, Any]) -> None:
        with self._changed:
            self.sessions.append(event["session"]["id"])
            self._changed.notify_all()

    def _done(self, event: dict[str, Any]) -> None:
        with self._changed:
            self.done.add(event["response"]["id"])
            self._changed.notify_all()

    def _reconnected(self, event: dict[str, Any]) -> None:
        at = time.perf_counter()
        with self._changed:
            self.reconnected, self.reconnected_at = event, at
            self._changed.notify_all()

    def wait(self, what: str, predicate: Any) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, WAIT):
                raise RuntimeError(f"no {what} within {WAIT}s")


def creates(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in record["client_events"] if e.get("type") == "response.create"]


def trial(emu: EmulatorProcess, loop: LoopThread, variant: str) -> dict[str, Any]:
    transport = "webrtc" if variant == "webrtc" else "websocket"
    client = RealtimeClient(
        api_key=API_KEY,
        base_url=emu.url,
        transport=transport,  # type: ignore[arg-type]
        loopback_only=True,
        loop_thread=loop,
        session=SESSION,
        tools=[get_weather],
        reconnect=Reconnect(backoff=0.0, jitter=0.0, restore_items=1000),
    )
    watch = Watch(client)
    with client:
        if variant == "websocket-200":
            for n in range(LONG_ITEMS):
                client.send_text(f"note {n}", respond=False)
            client.ask("hello")
        else:
            client.ask("hello")
            client.ask("get_weather")
            spoken = emu.speech(watch.sessions[0], "good morning", 300)
            watch.wait("spoken answer", lambda: spoken["response_id"] in watch.done)
        old = watch.sessions[0]
        old_creates = creates(http_json(f"{emu.control}/calls/{old}"))
        http_json(f"{emu.control}/calls/{old}/faults", {"close_after_events": 0})
        dropped = time.perf_counter()
        client.send_event({"type": "input_audio_buffer.clear"})  # its answer ends the session
        watch.wait("rtclient.reconnected", lambda: watch.reconnected is not None)
        event = watch.reconnected
        assert event is not None
        new = watch.sessions[-1]
        before_ask = http_json(f"{emu.control}/calls/{new}")
        answer = client.ask("and now?")
        after_ask = creates(http_json(f"{emu.control}/calls/{new}"))
        stats = client.stats()
    old_ids = {e.get("event_id") for e in old_creates}
    return {
        "restore_s": event["seconds"],
        "drop_to_restored_s": watch.reconnected_at - dropped,
        "attempts": event["attempts"],
        "items_restored": event["restored_items"],
        "not_restored": event["not_restored_count"],
        "restored_kinds": event["restored"],
        "replayed_creates": len(creates(before_ask))
        + sum(1 for e in after_ask if e.get("event_id") in old_ids),
        "creates_after_ask": len(after_ask),
        "answered": answer.text == "You said: and now?",
        "lost": stats["lost"],
        "rejections": stats["rejections"],
    }


def summarise(variant: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    restore = [r["restore_s"] * 1000 for r in rows]
    drop = [r["drop_to_restored_s"] * 1000 for r in rows]
    items = [r["items_restored"] for r in rows]
    return {
        "variant": variant,
        "trials": len(rows),
        "items_restored": min(items) if min(items) == max(items) else f"{min(items)}-{max(items)}",
        "restore_p50_ms": round(percentile(restore, 50) or 0.0, 1),
        "restore_p90_ms": round(percentile(restore, 90) or 0.0, 1),
        "restore_worst_ms": round(max(restore), 1),
        "drop_p50_ms": round(percentile(drop, 50) or 0.0, 1),
        "drop_worst_ms": round(max(drop), 1),
        "attempts_max": max(r["attempts"] for r in rows),
        "replayed_creates": sum(r["replayed_creates"] for r in rows),
        "answered": sum(1 for r in rows if r["answered"]),
        "lost": sum(r["lost"] for r in rows),
        "rejections": sum(r["rejections"] for r in rows),
    }


COLUMNS = [
    ("variant", "variant"),
    ("trials", "drops"),
    ("items_restored", "items restored"),
    ("restore_p50_ms", "restore p50 ms"),
    ("restore_p90_ms", "restore p90 ms"),
    ("restore_worst_ms", "restore worst ms"),
    ("drop_p50_ms", "drop to restored p50 ms"),
    ("attempts_max", "attempts (max)"),
    ("replayed_creates", "replayed creates"),
    ("answered", "answered after"),
    ("lost", "lost"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=positive_int, default=50, help="drops per variant")
    parser.add_argument(
        "--long-trials", type=positive_int, default=20, help="drops of the ~200-item session"
    )
    add_result_options(parser, "reconnect")
    parser.add_argument(
        "--replot", type=Path, metavar="JSON",
        help="only redraw the plot of a results file, next to it (no run)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.replot is not None:
        png = args.replot.with_suffix(".png")
        plot(json.loads(args.replot.read_text()), png)
        print(f"wrote {png}")
        return 0
    out = result_path(args.name, "reconnect")
    quiet_logs()
    plan = {"websocket": args.trials, "webrtc": args.trials, "websocket-200": args.long_trials}
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in plan}
    started = time.perf_counter()
    info = machine_info()
    progress = Progress(sum(plan.values()), "reconnect")
    options = {"turn_detection": {"type": "server_vad"}, "pace": {"delay": 0.0, "deltas": 1}}
    with EmulatorProcess(**options) as emu, LoopThread("bench-loop") as loop:
        for n in range(max(plan.values())):  # interleaved: machine noise hits all alike
            for variant, trials in plan.items():
                if n < trials:
                    rows[variant].append(trial(emu, loop, variant))
                    progress.advance(1, variant)
        referee = emu.stats()
    progress.close()
    results = [summarise(v, r) for v, r in rows.items()]
    payload = {
        "config": {
            "backoff_s": 0.0,
            "trials": args.trials,
            "long_trials": args.long_trials,
            "long_items": LONG_ITEMS + 2,
            "session": SESSION,
            "drop": "emulator close_after_events=0, then one client event",
        },
        "machine": info,
        "results": results,
        "restored_kinds": rows["websocket"][0]["restored_kinds"] if rows["websocket"] else {},
        "referee": {"rejections": referee.get("rejections"), "sessions": referee.get("sessions")},
        "samples_ms": {v: [round(r["restore_s"] * 1000, 2) for r in rs] for v, rs in rows.items()},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    path = write_json(out.stem, payload, out.parent)
    png = path.with_suffix(".png")
    plot(payload, png)
    print(table(results, COLUMNS))
    print(f"\nrestored kinds (websocket): {payload['restored_kinds']}")
    print(f"total {payload['wall_s']:.0f}s; wrote {path} and {png}")
    failed = [r for r in results if r["replayed_creates"] or r["answered"] != r["trials"]]
    return 1 if failed else 0


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for variant, values in payload["samples_ms"].items():
        ordered = sorted(values)
        n = len(ordered)
        if n:
            ax.plot(ordered, [(i + 1) / n for i in range(n)], marker=".", label=variant)
    rows = {r["variant"]: r for r in payload["results"]}
    ax.set_xlabel("ms from the loss to rtclient.reconnected (backoff 0)")
    ax.set_ylabel("fraction of drops")
    replayed = sum(r["replayed_creates"] for r in rows.values())
    ax.set_title(f"restore into a new session; replayed creates: {replayed}")
    ax.grid(True, alpha=0.3)
    ax.legend(
        [f"{v} ({rows[v]['items_restored']} items)" for v in payload["samples_ms"]], fontsize=8
    )
    ax.set_xlim(left=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
