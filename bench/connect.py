"""connect.py - how long ``RealtimeClient.connect()`` takes, against bare aiortc peers.

In the same run, interleaved round by round (so machine noise hits every variant alike):

``bare-dc``        two aiortc peers wired by hand in this process (SDP handed over in
                   memory, no HTTP), one data channel; time until it is open.
``bare-dc+audio``  the same with one sendrecv audio transceiver too - the shape of
                   rtclient's offer (``oai-events`` + one audio m-line). The fair baseline.
``rtclient``       ``RealtimeClient(loop_thread=shared).connect()`` against the emulator
                   (its own process, like a real server), no session config.
``rtclient+update``  the same with a session config (here tools), so ``connect()`` also
                   waits for the ``session.update`` round trip - what an app with tools pays.
``rtclient-own-loop``  ``RealtimeClient()`` with its own loop thread (started per connect).
``websocket``      ``RealtimeClient(transport="websocket", loop_thread=shared).connect()``:
                   a WebSocket session (HTTP upgrade, then ``session.created``), no config.
``sideband``       ``RealtimeClient(call_id=..., loop_thread=shared).connect()``: attach to
                   a live call a browser holds (a bare aiortc peer whose call was created
                   with ``rtclient.create_call`` before the clock starts); ready at the
                   ``session.updated`` answering its ``session.update``.

For each it reports the time from the start to the open data channel - the open
WebSocket for the last two - (p50/p90, and the ratio to the bare peers; target <= 1.2x
for WebRTC) and, for rtclient, to ``connect()`` returning.
Instrumentation (bench-only monkeypatches that only take timestamps) splits the time
into phases: setup (loop thread, bridge, HTTP session, peer), offer (createOffer +
setLocalDescription: ICE gathering), signaling HTTP (POST /realtime/calls, which
includes the server building its answer), setRemoteDescription, ICE checks, DTLS,
SCTP + data channel open, ``session.created`` arrival, the hop to the caller thread, and
the ``session.update`` round trip.

    python bench/connect.py              # 60 rounds
    python bench/connect.py --rounds 200
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import aiortc
from _common import (
    API_KEY,
    BrowserPeer,
    EmulatorProcess,
    Progress,
    add_result_options,
    machine_info,
    non_negative_int,
    percentile,
    positive_int,
    quiet_logs,
    result_path,
    table,
    write_json,
)
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

import rtclient.runtime.bridge
import rtclient.runtime.loop
from rtclient import LoopThread, RealtimeClient
from rtclient.transports import WebRTCTransport, WebSocketTransport
from rtclient.transports._loopback import loopback_only  # bench-only: keep ICE on 127.0.0.1

TOOLS_SESSION = {
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
}


# ----------------------------------------------------------------- timestamps (hooks)
class Recorder:
    """First-occurrence marks of one measurement (perf_counter seconds)."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.seen: set[tuple[str, int]] = set()
        self.offerer: Any = None
        self.t0 = time.perf_counter()

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.perf_counter())

    def count(self, name: str, obj: Any) -> None:
        """Count distinct objects (a bundled transport is started once per m-line)."""
        if (name, id(obj)) not in self.seen:
            self.seen.add((name, id(obj)))
            self.counts[name] = self.counts.get(name, 0) + 1


REC = Recorder()
_hooks_installed = False


def _wrap_async(cls: type, name: str, before: Callable[..., None] | None, after: Any) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(self, *args)
        result = await original(self, *args, **kwargs)
        if after is not None:
            after(self, *args)
        return result

    setattr(cls, name, wrapper)


def install_hooks() -> None:
    """Timestamp aiortc and rtclient internals (bench-only; behaviour is unchanged)."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True

    def offer_start(pc: Any) -> None:
        if REC.offerer is None:
            REC.offerer = pc
            REC.mark("offer_start")

            @pc.on("iceconnectionstatechange")  # type: ignore[untyped-decorator]
            def _ice() -> None:
                if pc.iceConnectionState == "checking":
                    REC.mark("ice_checking")
                if pc.iceConnectionState == "completed":
                    REC.mark("ice_connected")

            @pc.on("connectionstatechange")  # type: ignore[untyped-decorator]
            def _conn() -> None:
                if pc.connectionState == "connected":
                    REC.mark("dtls_connected")

    _wrap_async(RTCPeerConnection, "createOffer", offer_start, None)
    _wrap_async(
        RTCPeerConnection,
        "setLocalDescription",
        None,
        lambda pc, *a: REC.mark("local_set") if pc is REC.offerer else None,
    )

    def remote_set(pc: Any, description: Any = None, *a: Any) -> None:
        if pc is REC.offerer:
            REC.mark("remote_set")
        elif description is not None and description.type == "offer":
            REC.mark("answer_start")  # bare: the answering peer starts building

    _wrap_async(RTCPeerConnection, "setRemoteDescription", None, remote_set)

    original_dc = RTCPeerConnection.createDataChannel

    def create_dc(self: Any, *args: Any, **kwargs: Any) -> Any:
        channel = original_dc(self, *args, **kwargs)
        channel.on("open", lambda: REC.mark("channel_open"))
        return channel

    RTCPeerConnection.createDataChannel = create_dc  # type: ignore[method-assign]

    for cls, label in (
        (aiortc.RTCIceTransport, "ice_transport_starts"),
        (aiortc.RTCDtlsTransport, "dtls_transport_starts"),
    ):
        _wrap_async(cls, "start", lambda self, *a, _l=label: REC.count(_l, self), None)

    original_sctp_state = aiortc.RTCSctpTransport._set_state

    def sctp_state(self: Any, state: Any) -> None:
        if state == self.State.ESTABLISHED:
            REC.mark("sctp_established")
        original_sctp_state(self, state)

    aiortc.RTCSctpTransport._set_state = sctp_state  # type: ignore[method-assign]

    # rtclient internals (bench-only)
    _wrap_async(
        WebRTCTransport,
        "_post_offer",
        lambda self, sdp: REC.mark("http_start"),
        lambda self, sdp: REC.mark("answer"),
    )
    _wrap_async(aiohttp.ClientSession, "ws_connect", None, lambda self, *a: REC.mark("ws_open"))
    for transport in (WebRTCTransport, WebSocketTransport):
        _wrap_async(transport, "_connect", lambda self: REC.mark("transport_start"), None)
        _hook_traffic(transport)
    original_bridge_start = rtclient.runtime.bridge.Bridge.start

    def bridge_start(self: Any) -> Any:
        result = original_bridge_start(self)
        REC.mark("bridge_open")
        return result

    rtclient.runtime.bridge.Bridge.start = bridge_start  # type: ignore[method-assign]
    original_loop_start = rtclient.runtime.loop.LoopThread.start

    def loop_start(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original_loop_start(self, *args, **kwargs)
        REC.mark("loop_started")
        return result

    rtclient.runtime.loop.LoopThread.start = loop_start  # type: ignore[method-assign]


def _hook_traffic(transport: Any) -> None:
    """Marks when session.created/updated arrive and when session.update is sent."""
    original_receive = transport._receive

    def receive(self: Any, message: Any) -> None:
        text = message if isinstance(message, str) else message.decode()
        head = text[:40]
        if "session.created" in head:
            REC.mark("session_created")
        elif "session.updated" in head:
            REC.mark("session_updated")
        original_receive(self, message)

    transport._receive = receive
    original_send = transport.send

    def send(self: Any, event: Any) -> None:
        original_send(self, event)
        if event.get("type") == "session.update":
            REC.mark("update_sent")

    transport.send = send


# ------------------------------------------------------------------------ measurements
async def bare_pair(audio: bool) -> tuple[float, Recorder]:
    """Two peers in this process, SDP handed over in memory; time to the open channel."""
    global REC
    REC = rec = Recorder()
    opened = asyncio.Event()
    t0 = time.perf_counter()
    rec.t0 = t0
    with loopback_only():
        a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        channel = a.createDataChannel("oai-events")
        channel.on("open", opened.set)
        if audio:
            a.addTransceiver("audio", direction="sendrecv")

            @b.on("track")
            def _track(track: Any) -> None:
                pass

        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        rec.mark("answer")
        await a.setRemoteDescription(
            RTCSessionDescription(sdp=b.localDescription.sdp, type="answer")
        )
    await asyncio.wait_for(opened.wait(), 15)
    elapsed = time.perf_counter() - t0
    rec.mark("ready")
    await a.close()
    await b.close()
    return elapsed, rec


def rtclient_connect(
    url: str, loop_thread: LoopThread | None, session: dict[str, Any] | None, **options: Any
) -> tuple[float, Recorder, float]:
    global REC
    REC = rec = Recorder()
    client = RealtimeClient(
        api_key=API_KEY, base_url=url, loopback_only=True, loop_thread=loop_thread,
        session=session, **options,
    )  # fmt: skip
    t0 = time.perf_counter()
    rec.t0 = t0
    client.connect(timeout=15)
    rec.mark("ready")
    ready = time.perf_counter() - t0
    c0 = time.perf_counter()
    client.close()
    close = time.perf_counter() - c0
    return ready, rec, close


# ---------------------------------------------------------------------------- phases
PHASES_RTCLIENT = [
    ("loop_started", "loop thread start"),
    ("bridge_open", "bridge + dispatcher"),
    ("transport_start", "to Transport._connect"),
    ("offer_start", "HTTP session + peer setup"),
    ("local_set", "createOffer+setLocal (ICE gather)"),
    ("http_start", "to POST"),
    ("answer", "signaling HTTP (server answers)"),
    ("remote_set", "setRemoteDescription"),
    ("ice_connected", "ICE checks"),
    ("dtls_connected", "DTLS handshake"),
    ("channel_open", "SCTP + channel open"),
    ("session_created", "session.created arrives"),
    ("update_sent", "hop to caller, send session.update"),
    ("session_updated", "session.update round trip"),
    ("ready", "connect() returns"),
]
PHASES_WEBSOCKET = [
    ("loop_started", "loop thread start"),
    ("bridge_open", "bridge + dispatcher"),
    ("transport_start", "to WebSocketTransport._connect"),
    ("ws_open", "WebSocket handshake (HTTP upgrade)"),
    ("session_created", "session.created arrives"),
    ("update_sent", "hop to caller, send session.update"),
    ("session_updated", "session.update round trip"),
    ("ready", "connect() returns"),
]
PHASES_BARE = [
    ("offer_start", "peer setup"),
    ("local_set", "createOffer+setLocal (ICE gather)"),
    ("answer", "answerer: setRemote+answer (in memory)"),
    ("remote_set", "setRemoteDescription"),
    ("ice_connected", "ICE checks"),
    ("dtls_connected", "DTLS handshake"),
    ("channel_open", "SCTP + channel open"),
]


def segments(rec: Recorder, phases: list[tuple[str, str]]) -> dict[str, float]:
    """Milliseconds from the previous present mark to each mark, in phase order."""
    out: dict[str, float] = {}
    previous = rec.t0
    for key, _ in phases:
        t = rec.marks.get(key)
        if t is None:
            continue
        out[key] = max(0.0, (t - previous) * 1000)
        previous = max(previous, t)
    return out


VARIANTS = (
    "bare-dc",
    "bare-dc+audio",
    "rtclient",
    "rtclient+update",
    "rtclient-own-loop",
    "websocket",
    "sideband",
)


def phases_of(variant: str) -> list[tuple[str, str]]:
    if variant.startswith("bare"):
        return PHASES_BARE
    return PHASES_WEBSOCKET if variant in ("websocket", "sideband") else PHASES_RTCLIENT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=positive_int, default=60, help="measurements per variant")
    parser.add_argument(
        "--warmup", type=non_negative_int, default=3, help="unmeasured rounds first"
    )
    add_result_options(parser, "connect")
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
    out = result_path(args.name, "connect")
    quiet_logs()
    install_hooks()
    started = time.perf_counter()
    samples: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    progress = Progress((args.rounds + args.warmup) * len(VARIANTS), "connect")
    with (
        EmulatorProcess(pace={"delay": 0.01}) as emulator,
        LoopThread("bench-loop") as shared,
        LoopThread("bench-browser") as browsers,
    ):
        for round_no in range(args.rounds + args.warmup):
            for variant in VARIANTS:
                sample: dict[str, Any]
                if variant.startswith("bare"):
                    _, rec = shared.call(bare_pair(variant.endswith("audio")), timeout=30)
                    sample = {"open_ms": (rec.marks["channel_open"] - rec.t0) * 1000}
                    sample["segments"] = segments(rec, PHASES_BARE)
                else:
                    loop = None if variant == "rtclient-own-loop" else shared
                    session = TOOLS_SESSION if variant == "rtclient+update" else None
                    options: dict[str, Any] = {}
                    browser = None
                    if variant == "websocket":
                        options["transport"] = "websocket"
                    elif variant == "sideband":  # the call exists before the clock starts
                        browser = BrowserPeer(browsers, emulator.url).open({"type": "realtime"})
                        options["call_id"] = browser.call_id
                    ready, rec, close = rtclient_connect(emulator.url, loop, session, **options)
                    if browser is not None:
                        browser.close()
                    opened = rec.marks.get("channel_open", rec.marks.get("ws_open", rec.t0))
                    sample = {
                        "open_ms": (opened - rec.t0) * 1000,
                        "ready_ms": ready * 1000,
                        "close_ms": close * 1000,
                        "segments": segments(rec, phases_of(variant)),
                    }
                sample["counts"] = dict(rec.counts)
                if round_no >= args.warmup:
                    samples[variant].append(sample)
                progress.advance(1, variant)
    progress.close()

    rows: list[dict[str, Any]] = []
    bare_audio = statistics.median(s["open_ms"] for s in samples["bare-dc+audio"])
    bare_dc = statistics.median(s["open_ms"] for s in samples["bare-dc"])
    for variant in VARIANTS:
        opens = [s["open_ms"] for s in samples[variant]]
        readies = [s["ready_ms"] for s in samples[variant] if "ready_ms" in s]
        p50 = percentile(opens, 50)
        assert p50 is not None
        rows.append(
            {
                "variant": variant,
                "rounds": len(opens),
                "open_p50_ms": p50,
                "open_p90_ms": percentile(opens, 90),
                "ratio_vs_bare_audio": p50 / bare_audio,
                "ratio_vs_bare_dc": p50 / bare_dc,
                "ready_p50_ms": percentile(readies, 50),
                "ready_p90_ms": percentile(readies, 90),
                "close_p50_ms": percentile(
                    [s["close_ms"] for s in samples[variant] if "close_ms" in s], 50
                ),
                "ice_transports": max(
                    (s["counts"].get("ice_transport_starts", 0) for s in samples[variant]),
                    default=0,
                ),
            }
        )
    breakdown: dict[str, list[dict[str, Any]]] = {}
    for variant in VARIANTS:
        phases = phases_of(variant)
        lines = []
        for key, label in phases:
            values = [s["segments"][key] for s in samples[variant] if key in s["segments"]]
            if values:
                lines.append(
                    {
                        "phase": label,
                        "mark": key,
                        "p50_ms": percentile(values, 50),
                        "mean_ms": statistics.fmean(values),
                    }
                )
        breakdown[variant] = lines
    total = time.perf_counter() - started
    payload = {
        "bench": "connect",
        "rounds": args.rounds,
        "total_wall_s": total,
        "machine": machine_info(),
        "results": rows,
        "breakdown_ms": breakdown,
        "samples": {v: [round(s["open_ms"], 3) for s in samples[v]] for v in VARIANTS},
        "ready_samples": {
            v: [round(s["ready_ms"], 3) for s in samples[v] if "ready_ms" in s] for v in VARIANTS
        },
    }
    path = write_json(out.stem, payload, out.parent)
    png = path.with_suffix(".png")
    plot(payload, png)
    print(
        table(
            rows,
            [
                ("variant", "variant"),
                ("rounds", "n"),
                ("open_p50_ms", "open p50 ms"),
                ("open_p90_ms", "open p90 ms"),
                ("ratio_vs_bare_audio", "x bare dc+audio"),
                ("ratio_vs_bare_dc", "x bare dc"),
                ("ready_p50_ms", "connect() p50 ms"),
                ("ready_p90_ms", "connect() p90 ms"),
                ("close_p50_ms", "close p50 ms"),
                ("ice_transports", "ICE transports (both peers)"),
            ],
        )
    )
    for variant in ("bare-dc+audio", "rtclient+update", "websocket", "sideband"):
        print(f"\nwhere the time goes: {variant} (median ms per phase, from the previous mark)")
        columns = [("phase", "phase"), ("p50_ms", "p50"), ("mean_ms", "mean")]
        print(table(breakdown[variant], columns))
    print(f"\ntotal {total:.0f}s; wrote {path} and {png}")
    return 0


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(17, 7), gridspec_kw={"width_ratios": [1, 1.4]})
    tab10 = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
    colour = {v: tab10[i % len(tab10)] for i, v in enumerate(payload["samples"])}
    for variant, values in payload["samples"].items():
        ordered = sorted(values)
        n = len(ordered)
        left.plot(
            ordered, [(i + 1) / n for i in range(n)], color=colour[variant],
            label=f"{variant} (open)",
        )  # fmt: skip
    for variant, values in payload["ready_samples"].items():
        if values:
            ordered = sorted(values)
            n = len(ordered)
            left.plot(
                ordered, [(i + 1) / n for i in range(n)], linestyle="--", color=colour[variant],
                label=f"{variant} (connect() returns)",
            )  # fmt: skip
    everything = [v for vs in payload["ready_samples"].values() for v in vs]
    left.set_xlim(left=0, right=(percentile(everything, 98) or 60) * 1.25)
    left.set_xlabel("ms from start")
    left.set_ylabel("fraction of rounds")
    left.set_title("open data channel (solid), connect() returned (dashed)")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=7)

    variants = list(payload["breakdown_ms"])
    colours = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]
    phases = PHASES_RTCLIENT + PHASES_WEBSOCKET + PHASES_BARE
    order = list(dict.fromkeys(label for _, label in phases))
    labels_seen: dict[str, Any] = {}
    for row, variant in enumerate(variants):
        start = 0.0
        for line in payload["breakdown_ms"][variant]:
            width = line["mean_ms"]
            colour = colours[order.index(line["phase"]) % len(colours)]
            bar = right.barh(row, width, left=start, color=colour, edgecolor="white")
            labels_seen.setdefault(line["phase"], bar)
            start += width
        right.text(start + 0.5, row, f"{start:.1f} ms", va="center", fontsize=8)
    right.set_yticks(range(len(variants)))
    right.set_yticklabels(variants)
    right.invert_yaxis()
    right.set_xlabel("mean ms per phase (stacked)")
    right.set_title("where the time goes")
    right.set_xlim(right=max(40.0, right.get_xlim()[1] * 1.08))
    right.legend(
        labels_seen.values(), labels_seen.keys(), fontsize=8, ncol=3,
        loc="upper center", bbox_to_anchor=(0.5, -0.12),
    )  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
