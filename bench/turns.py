"""Server turns vs client turns: rejections with voice, and what client turns cost.

Each trial is the RCA's voice race: a response calls K tools; as their results land,
the user speaks (server VAD commits a turn). With **server turns** (the API's default,
``create_response: true``) the server answers the turn itself, and our tool follow-up
can cross that reply on the wire: the server rejects it and the gate re-arms it. With
**client turns** (``RealtimeClient(client_turns=True)``) the server starts nothing;
the client requests the answer through the gate when the turn is committed, so no
create can cross a server response. (In the race a turn's create often waits for the
tool round's response to finish; that wait is the gate doing its job. The added
latency is therefore measured on a quiet conversation, one turn at a time.)

Measured per mode: the emulator's active-response rejections (the referee's count),
creates, lost triggers, and - client turns only - the added latency from the moment
the loop thread reads ``input_audio_buffer.committed`` to the moment our create for it
is on the wire (``transport.send`` returned). Bench-only: it wraps the client's private
message callback and ``send`` to read those two clocks.

    python bench/turns.py --name turns    # 300 trials per mode, K=4 -> results/turns.json
    python bench/turns.py --trials 50     # quicker -> results/local/turns.json
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    add_result_options,
    fmt,
    machine_info,
    percentile,
    positive_int,
    quiet_logs,
    result_path,
    table,
    write_json,
)

from rtclient import RealtimeClient, tool
from rtclient.emulator import Emulator, Pace


def run_mode(client_turns: bool, trials: int, k: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    release = threading.Event()

    @tool
    def work(i: int = 0) -> int:
        """Finishes when released."""
        release.wait(10)
        return i

    committed_at: dict[str, float] = {}
    latencies: list[float] = []
    with Emulator(pace=Pace(delay=0.002, deltas=2)) as emulator:
        client = RealtimeClient(
            api_key="sk-bench",
            base_url=emulator.url,
            loopback_only=True,
            tools=[work],
            client_turns=client_turns,
            confirm_timeout=30.0,
        ).connect()
        try:
            session = emulator.sessions[-1]
            transport: Any = client._transport
            assert transport is not None
            on_message = transport._on_message
            send = transport.send

            quiet = threading.Event()  # set for the latency phase only

            def timed_message(text: str) -> None:
                if quiet.is_set() and '"input_audio_buffer.committed"' in text:
                    committed_at["last"] = time.perf_counter()
                on_message(text)

            def timed_send(event: Any) -> None:
                send(event)
                if event.get("type") == "response.create" and "last" in committed_at:
                    latencies.append(time.perf_counter() - committed_at.pop("last"))

            transport._on_message = timed_message
            transport.send = timed_send
            started = time.perf_counter()
            for _ in range(trials):
                release.clear()
                ticket = client.send_text(f"use work*{k}")
                assert ticket is not None
                ticket.result(30)
                speech = threading.Thread(target=session.simulate_speech, args=("and?", 20))
                threading.Event().wait(rng.uniform(0, 0.004))  # a random offset, not a sync
                speech.start()
                release.set()
                speech.join(30)
                emulator.wait_for(lambda: session.active_response_id is None, 30)
            wall = time.perf_counter() - started
            if client_turns:  # the added latency, on a quiet conversation
                # let the race phase's last responses finish first (a bench may poll):
                # a stray response.done would otherwise start each turn while the
                # previous answer still runs, and time the wait, not the hand-off
                idle_by = time.monotonic() + 30
                while not (client.gate.machine.free and session.active_response_id is None):
                    if time.monotonic() > idle_by:
                        raise RuntimeError("the conversation did not go quiet within 30 s")
                    threading.Event().wait(0.01)
                threading.Event().wait(0.2)  # events already on the way are read
                answered = threading.Event()
                # the gate is fed before the dispatcher sees response.done: free by then
                client.on("response.done", lambda e: answered.set(), raw=True)
                quiet.set()
                for _ in range(trials):
                    answered.clear()
                    session.simulate_speech("hello", 20)
                    if not answered.wait(30):
                        raise RuntimeError("a quiet turn was not answered within 30 s")
                quiet.clear()
            emulator.wait_for(lambda: client.gate.machine.free, 10)
            stats = client.stats()
            referee = emulator.stats()
        finally:
            client.close()
    ms = [x * 1000 for x in latencies]
    return {
        "mode": "client turns" if client_turns else "server turns",
        "trials": trials,
        "k": k,
        "rejections": referee["rejections"],
        "creates": referee["creates"],
        "responses": referee["responses"],
        "rearmed": stats["rearmed"],
        "lost": stats["lost"],
        "turn_to_create_p50_ms": percentile(ms, 50) if ms else None,
        "turn_to_create_p99_ms": percentile(ms, 99) if ms else None,
        "turn_to_create_n": len(ms),
        "wall_s": round(wall, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=positive_int, default=300)
    parser.add_argument("--k", type=positive_int, default=4, help="tool calls per race")
    parser.add_argument("--seed", type=int, default=7)
    add_result_options(parser, "turns")
    args = parser.parse_args()
    quiet_logs()
    rows = [run_mode(mode, args.trials, args.k, args.seed) for mode in (False, True)]
    columns = [
        ("mode", "mode"),
        ("trials", "trials"),
        ("rejections", "rejections"),
        ("rearmed", "rearmed"),
        ("lost", "lost"),
        ("creates", "creates"),
        ("turn_to_create_p50_ms", "turn->create p50 ms"),
        ("turn_to_create_p99_ms", "p99 ms"),
        ("wall_s", "wall s"),
    ]
    print(table([{k: fmt(v, 3) for k, v in row.items()} for row in rows], columns))
    out = result_path(args.name, "turns")
    path = write_json(
        out.stem, {"machine": machine_info(), "args": vars(args), "rows": rows}, out.parent
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
