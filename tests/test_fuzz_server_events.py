"""Fuzzed server event streams (issue 10): adversarial, schema-valid streams through the emulator.

Each hypothesis example connects a fresh client (WebRTC over loopback) to one emulator
shared by the module, then runs a short *program* mixing the client's own requests with
what a hostile or broken server could send on top of the real responses:

* noise the client must skip: malformed texts (not JSON, truncated JSON, JSON that is not
  an object, objects without a string ``type``), events of unknown type (the Realtime
  API's server event set is read from the ``openai`` package, never written by hand),
  events up to the data channel's 262,144-byte message limit;
* duplicates: re-sent copies of events the emulator already sent (replays);
* missing or late ``response.created`` (the emulator's ``drop_response_created`` and
  ``delay_response_created`` faults), and the emulator's own malformed / unknown /
  oversized injections;
* lies with ids that are not ours: a ``response.done`` for a response never created, an
  ``error`` naming an ``event_id`` we never sent, function-call events for unknown
  responses, deltas and items of unknown responses;
* responses the client never asked for ("phantoms": foreign response and ticket ids),
  in-band only when the API allows one (nothing else active), optionally held open
  while the client makes requests, optionally without their ``response.created``.

Properties checked after every example, with every wait bounded:

* no exception escapes: nothing reaches ``threading.excepthook``, ``sys.unraisablehook``,
  the client loop's asyncio exception handler, a loguru record with an exception, or a
  stdlib log record with a traceback; the connection stays open and the dispatcher
  keeps delivering (a marker event round trip);
* every waiter settles: each ticket from ``request_response()``/``send_text()`` resolves
  (or fails with a typed ``RealtimeError``) once the real responses are done, and a
  probe request made after the program is served; ``stats()["lost"] == 0`` and
  nothing stays outstanding;
* no double create: no ``response.create`` ``event_id`` reaches the emulator twice, each
  gate create carries its own ticket, the gate never claims more creates than it
  accepted requests, no create is sent while a server response is active (the emulator
  never answers ``conversation_already_has_active_response``), and no tool call gets two
  outputs;
* every counter counts what its name says (README's ``stats()`` list), against what the
  emulator recorded (a separate test, so a counter bug does not hide the others).

The client bugs this test found (odd-typed fields escaping to the loop or killing the
dispatcher, a duplicated ``response.created`` after its done, duplicated function-call
events re-running a tool) keep their own tests, each with its minimal sequence as an
explicit example. Hypothesis runs
derandomized with no database (CI is reproducible); ``RTCLIENT_FUZZ_SHRINK=1`` turns
shrinking on (off by default: each example costs a WebRTC connection, and the programs
are short enough to read unshrunk).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import json
import logging
import os
import sys
import threading
import time
import typing
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from loguru import logger
from openai.types.realtime import RealtimeServerEvent

from rtclient import RealtimeClient, RealtimeError, ResponseTicket, tool
from rtclient.emulator import Emulator, Pace
from rtclient.emulator.session import Session
from rtclient.runtime.loop import LoopThread

MAX_MESSAGE_BYTES = 262_144  # aiortc's SCTP max-message-size, both ways
SETTLE_S = 10.0  # bound on every wait for the client or the emulator
_SLICE_S = 0.25  # how often a long wait looks for a lost connection or an escape
WEDGED_S = 3.0  # the same, in the tests whose explicit example used to hang
ACTIVE_RESPONSE = "conversation_already_has_active_response"
FINAL_STATUSES = ("completed", "cancelled", "incomplete", "failed")


def _event_types(union: Any) -> frozenset[str]:
    """The ``type`` literals of the members of one of the ``openai`` package's unions."""
    if typing.get_origin(union) is typing.Annotated:
        union = typing.get_args(union)[0]
    found: set[str] = set()
    for member in typing.get_args(union):
        found.update(typing.get_args(member.model_fields["type"].annotation))
    return frozenset(found)


def _server_event_types() -> frozenset[str]:
    """The Realtime API's server event types: the GA union, plus the beta union's older
    names the server may still send (rtclient's own definition, see tests/test_events.py)."""
    found = _event_types(RealtimeServerEvent)
    try:
        from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
    except ImportError:  # a package without the beta API
        return found
    return found | _event_types(BetaServerEvent)


KNOWN_TYPES = _server_event_types()
assert {"response.created", "response.done", "error", "session.created"} <= KNOWN_TYPES


def classify(event: dict[str, Any]) -> str:
    """How the client must see one message the emulator sent (as the emulator recorded
    it: a parsed object, or ``{"type": None, "raw": text}``)."""
    kind = event.get("type")
    if not isinstance(kind, str):
        return "malformed"
    return "known" if kind in KNOWN_TYPES else "unknown"


@tool
def echo(x: str = "") -> str:
    """Returns its argument."""
    return x


class InlineExecutor(concurrent.futures.Executor):
    """Runs each tool on the submitting thread (the dispatcher): a tool's output and
    follow-up request are on their way before the next event is dispatched, so a marker
    round trip is a complete barrier, and no tool thread outlives an example."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


# --------------------------------------------------------------------------- program ops
# A program is a list of ops. Texts may hold ``@ID@``, replaced at run time by an id
# unique to that injection (so a lie is never a duplicate unless a Replay makes it one).


@dataclasses.dataclass(frozen=True)
class Request:
    kind: str  # plain | params | text | tool | oob


@dataclasses.dataclass(frozen=True)
class Inject:
    text: str


@dataclasses.dataclass(frozen=True)
class Oversized:
    nbytes: int  # the message's UTF-8 size, at most MAX_MESSAGE_BYTES
    shape: str  # known | unknown | malformed


@dataclasses.dataclass(frozen=True)
class Replay:
    """Re-send a copy of an event the emulator already sent to this client."""

    pick: int
    kind: str = "safe"  # safe | created | calls (see Harness.replayable)


@dataclasses.dataclass(frozen=True)
class Faults:
    changes: tuple[tuple[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class Phantom:
    """A response the client never asked for, with foreign ids."""

    out_of_band: bool
    created: bool = True  # False: its response.created is missing
    ticket: bool = False  # its metadata names a ticket that is not ours
    middle: tuple[str, ...] = ()  # events between created and done (text|call|limits)
    hold: bool = False  # stays active across the next ops, until a Settle


@dataclasses.dataclass(frozen=True)
class Settle:
    """Wait until every request is served and the emulator is idle."""


Op = Request | Inject | Oversized | Replay | Faults | Phantom | Settle


# --------------------------------------------------------------------------- strategies
def _dumps(event: Any) -> str:
    return json.dumps(event, separators=(",", ":"))


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=6))
small_json = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3)
    ),
    max_leaves=5,
)
extra_fields = st.dictionaries(
    st.text(min_size=1, max_size=6).filter(lambda k: k not in ("type", "event_id")),
    small_json,
    max_size=2,
)


def _not_json_object(text: str) -> bool:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return True
    return not (isinstance(value, dict) and isinstance(value.get("type"), str))


_TEMPLATE = _dumps(
    {
        "type": "response.done",
        "event_id": "event_@ID@",
        "response": {"id": "resp_lie@ID@", "status": "completed", "output": []},
    }
)
malformed_texts = st.one_of(
    st.sampled_from(["", "{", "}{", "[", "nul", "{not json", '{"type": "response.created"']),
    st.integers(1, len(_TEMPLATE) - 1).map(lambda cut: _TEMPLATE[:cut]),  # truncated
    st.text(max_size=12).filter(_not_json_object),
    small_json.filter(lambda v: not isinstance(v, dict)).map(_dumps),  # not an object
    st.tuples(
        extra_fields, st.one_of(st.just("absent"), scalars.filter(lambda v: not isinstance(v, str)))
    ).map(lambda p: _dumps(p[0] if p[1] == "absent" else {**p[0], "type": p[1]})),
)


def _near_miss(known: str) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [
            known.upper(),
            known + ".",
            known.replace(".", "_"),
            "x." + known,
            known + "s",
            " " + known,
        ]
    )


unknown_types = st.one_of(
    st.text(max_size=16),
    st.sampled_from(sorted(KNOWN_TYPES)).flatmap(_near_miss),
    st.just("emulator.unknown_event"),
).filter(lambda t: t not in KNOWN_TYPES)
unknown_texts = st.tuples(unknown_types, extra_fields).map(
    lambda p: _dumps({**p[1], "type": p[0], "event_id": "event_@ID@"})
)
# Known types with fields missing ("truncated" events): still well-formed.
bare_known_texts = st.sampled_from(sorted(KNOWN_TYPES)).map(
    lambda t: _dumps({"type": t, "event_id": "event_@ID@"})
)


def _message_item(item_id: str, text: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text}],
    }


def _call_item(item_id: str, call_id: str, name: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": '{"x": "lie"}',
    }


def _response(
    rid: str, status: str, *, conversation: bool, metadata: Any, output: list[Any]
) -> dict[str, Any]:
    return {
        "object": "realtime.response",
        "id": rid,
        "status": status,
        "status_details": None,
        "output": output,
        "conversation_id": "conv_lie" if conversation else None,
        "output_modalities": ["text"],
        "metadata": metadata,
        "usage": None,
    }


foreign_metadata = st.sampled_from(
    [None, {"rtclient_ticket": "rtc_not_ours_@ID@"}, {"rtclient_oob": "evt_not_ours_@ID@"}]
)


@st.composite
def lie_texts(draw: st.DrawFn) -> str:
    """A well-typed event whose ids are not ours (never names one of our events)."""
    kind = draw(
        st.sampled_from(
            ["done", "done_call", "error", "call_args", "delta", "item", "oob_created", "other"]
        )
    )
    if kind in ("done", "done_call"):
        output: list[Any] = [_message_item("item_lie@ID@", "lie")]
        if kind == "done_call":
            output = [
                _call_item("item_lie@ID@", "call_lie@ID@", draw(st.sampled_from(["echo", "nope"])))
            ]
        event = {
            "type": "response.done",
            "response": _response(
                "resp_lie@ID@",
                draw(st.sampled_from(FINAL_STATUSES)),
                conversation=draw(st.booleans()),
                metadata=draw(foreign_metadata),
                output=output,
            ),
        }
    elif kind == "error":
        code = draw(
            st.sampled_from(
                [
                    None,
                    ACTIVE_RESPONSE,
                    "invalid_value",
                    "response_cancel_not_active",
                    "server_error",
                ]
            )
        )
        message = "lie"
        if code == ACTIVE_RESPONSE:
            message = (
                "Conversation already has an active response in progress: resp_lie@ID@. "
                "Wait until the response is finished before creating a new one."
            )
        event = {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "param": None,
                "event_id": draw(st.sampled_from([None, "evt_not_ours_@ID@"])),
            },
        }
    elif kind == "call_args":
        event = {
            "type": "response.function_call_arguments.done",
            "response_id": "resp_lie@ID@",
            "item_id": "item_lie@ID@",
            "output_index": 0,
            "call_id": "call_lie@ID@",
            "name": draw(st.sampled_from(["echo", "nope"])),
            "arguments": draw(st.sampled_from(['{"x": "lie"}', "{}", "not json", "[1]"])),
        }
    elif kind == "delta":
        event = {
            "type": "response.output_text.delta",
            "response_id": "resp_lie@ID@",
            "item_id": "item_lie@ID@",
            "output_index": 0,
            "content_index": 0,
            "delta": "lie",
        }
    elif kind == "item":
        event = {
            "type": draw(st.sampled_from(["conversation.item.added", "conversation.item.done"])),
            "previous_item_id": None,
            "item": _message_item("item_lie@ID@", "lie"),
        }
    elif kind == "oob_created":
        event = {
            "type": "response.created",
            "response": _response(
                "resp_lie@ID@",
                "in_progress",
                conversation=False,
                metadata=draw(foreign_metadata),
                output=[],
            ),
        }
    else:
        event = draw(
            st.sampled_from(
                [
                    {"type": "session.updated", "session": {"type": "realtime"}},
                    {"type": "rate_limits.updated", "rate_limits": []},
                    {"type": "output_audio_buffer.started", "response_id": "resp_lie@ID@"},
                    {"type": "output_audio_buffer.stopped", "response_id": "resp_lie@ID@"},
                    {"type": "output_audio_buffer.cleared", "response_id": "resp_lie@ID@"},
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": 0,
                        "item_id": "item_lie@ID@",
                    },
                    {"type": "conversation.item.deleted", "item_id": "item_lie@ID@"},
                ]
            )
        )
    return _dumps({"type": event["type"], "event_id": "event_@ID@", **event})


fault_changes = st.sampled_from(
    [
        (("drop_response_created", True),),
        (("drop_response_created", False),),
        (("delay_response_created", 0.05),),
        (("delay_response_done", 0.05),),
        (("malformed_json", True),),
        (("unknown_event", True),),
        (("oversized_event_bytes", 70_000),),
        (("oversized_event_bytes", 200_000),),
        (("malformed_json", False), ("unknown_event", False), ("oversized_event_bytes", 0)),
    ]
)
phantoms = st.builds(
    Phantom,
    out_of_band=st.booleans(),
    created=st.booleans(),
    ticket=st.booleans(),
    middle=st.lists(st.sampled_from(["text", "call", "limits"]), max_size=3).map(tuple),
    hold=st.booleans(),
)
oversized = st.builds(
    Oversized,
    nbytes=st.one_of(st.just(MAX_MESSAGE_BYTES), st.integers(65_536, MAX_MESSAGE_BYTES)),
    shape=st.sampled_from(["known", "unknown", "malformed"]),
)
requests = st.builds(Request, st.sampled_from(["plain", "params", "text", "tool", "oob"]))

noise_ops = st.one_of(
    malformed_texts.map(Inject),
    unknown_texts.map(Inject),
    bare_known_texts.map(Inject),
)
adversarial_ops = st.one_of(
    noise_ops,
    lie_texts().map(Inject),
    oversized,
    st.builds(Replay, st.integers(0, 200)),
    fault_changes.map(Faults),
    phantoms,
)


counted_ops = st.one_of(noise_ops, lie_texts().map(Inject), oversized, fault_changes.map(Faults))


@st.composite
def programs(draw: st.DrawFn, adversarial: st.SearchStrategy[Op], rounds: int = 3) -> list[Op]:
    """Rounds of our requests shuffled with adversarial ops, each maybe settled."""
    program: list[Op] = []
    for _ in range(draw(st.integers(1, rounds))):
        ops = draw(st.lists(requests, min_size=1, max_size=3))
        ops += draw(st.lists(adversarial, max_size=4))
        program += draw(st.permutations(ops))
        if draw(st.booleans()):
            program.append(Settle())
    return program


# --------------------------------------------------------------------------- odd types
# Known event types whose fields are present but of the wrong JSON type. Every template
# is harmless with the right types, and the created response is out of band (its
# ``conversation_id`` is never mutated), so no mutation can leave the gate waiting on a lie.
_ODD_TEMPLATES: dict[str, tuple[dict[str, Any], list[tuple[str, ...]]]] = {
    "response.created": (
        {
            "type": "response.created",
            "response": _response(
                "resp_odd@ID@",
                "in_progress",
                conversation=False,
                metadata={"rtclient_ticket": "rtc_not_ours_@ID@"},
                output=[],
            ),
        },
        [
            ("response",),
            ("response", "id"),
            ("response", "metadata"),
            ("response", "metadata", "rtclient_ticket"),
            ("response", "status"),
        ],
    ),
    "response.done": (
        {
            "type": "response.done",
            "response": _response(
                "resp_odd@ID@",
                "completed",
                conversation=False,
                metadata={"rtclient_oob": "evt_not_ours_@ID@"},
                output=[_message_item("item_odd@ID@", "odd")],
            ),
        },
        [
            ("response",),
            ("response", "id"),
            ("response", "output"),
            ("response", "output", 0),
            ("response", "output", 0, "type"),
            ("response", "output", 0, "content"),
            ("response", "metadata"),
            ("response", "metadata", "rtclient_oob"),
            ("response", "conversation_id"),
        ],
    ),
    "error": (
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": "invalid_value",
                "message": "odd",
                "param": None,
                "event_id": "evt_not_ours_@ID@",
            },
        },
        [
            ("error",),
            ("error", "event_id"),
            ("error", "code"),
            ("error", "message"),
            ("error", "type"),
        ],
    ),
    "response.output_item.added": (
        {
            "type": "response.output_item.added",
            "response_id": "resp_odd@ID@",
            "output_index": 0,
            "item": _call_item("item_odd@ID@", "call_odd@ID@", "echo"),
        },
        [("item",), ("item", "type"), ("item", "call_id"), ("item", "name"), ("response_id",)],
    ),
    "response.output_item.done": (
        {
            "type": "response.output_item.done",
            "response_id": "resp_odd@ID@",
            "output_index": 0,
            "item": _call_item("item_odd@ID@", "call_odd@ID@", "echo"),
        },
        [("item",), ("item", "call_id"), ("item", "name"), ("item", "arguments"), ("response_id",)],
    ),
    "response.function_call_arguments.done": (
        {
            "type": "response.function_call_arguments.done",
            "response_id": "resp_odd@ID@",
            "item_id": "item_odd@ID@",
            "output_index": 0,
            "call_id": "call_odd@ID@",
            "name": "echo",
            "arguments": '{"x": "odd"}',
        },
        [("call_id",), ("name",), ("arguments",), ("response_id",)],
    ),
    "session.updated": (
        {"type": "session.updated", "session": {"type": "realtime"}},
        [("session",)],
    ),
    "rate_limits.updated": ({"type": "rate_limits.updated", "rate_limits": []}, [("rate_limits",)]),
}
odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.text(max_size=4),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["a", "id"]), st.integers(0, 3), max_size=1),
)


def _mutate(event: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = list(event) if isinstance(event, list) else dict(event)
    copy[path[0]] = _mutate(event[path[0]], path[1:], value)
    return copy


@st.composite
def odd_texts(draw: st.DrawFn) -> str:
    template, paths = _ODD_TEMPLATES[draw(st.sampled_from(sorted(_ODD_TEMPLATES)))]
    event = _mutate(template, draw(st.sampled_from(paths)), draw(odd_values))
    return _dumps({"type": event["type"], "event_id": "event_@ID@", **event})


# --------------------------------------------------------------------------- watching
class Escapes:
    """Everything that reports an exception nobody handled, while installed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.found: list[str] = []

    def add(self, where: str, detail: object) -> None:
        with self._lock:
            self.found.append(f"{where}: {detail}")

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.found)

    def take(self) -> list[str]:
        with self._lock:
            found, self.found = self.found, []
        return found

    def asyncio_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.add("asyncio", f"{context.get('message')} {context.get('exception')!r}")
        loop.default_exception_handler(context)


class _TracebackHandler(logging.Handler):
    """Stdlib records with a traceback (aiortc's DTLS task dying, a future callback
    raising in ``concurrent.futures``, asyncio's default handler)."""

    def __init__(self, escapes: Escapes) -> None:
        super().__init__(logging.WARNING)
        self.escapes = escapes

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info:
            self.escapes.add(f"logging {record.name}", repr(record.exc_info[1]))
        elif "Traceback (most recent call last)" in message:
            self.escapes.add(f"logging {record.name}", message.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(turn_detection=None, pace=Pace(delay=0.002, deltas=3), seed=10) as emu:
        yield emu


@pytest.fixture
def escapes() -> Iterator[Escapes]:
    found = Escapes()
    previous_thread_hook, previous_unraisable = threading.excepthook, sys.unraisablehook

    def thread_hook(args: Any) -> None:
        thread = args.thread.name if args.thread is not None else "?"
        found.add(f"thread {thread}", repr(args.exc_value))
        previous_thread_hook(args)

    def unraisable(args: Any) -> None:
        found.add("unraisable", f"{args.err_msg} {args.exc_value!r}")
        previous_unraisable(args)

    def loguru_sink(message: Any) -> None:
        record = message.record
        if record["exception"] is not None:
            found.add(f"loguru {record['name']}", record["message"])

    handler = _TracebackHandler(found)
    logging.getLogger().addHandler(handler)
    threading.excepthook, sys.unraisablehook = thread_hook, unraisable
    sink = logger.add(
        loguru_sink,
        level="WARNING",
        filter=lambda r: not (r["name"] or "").startswith("rtclient.emulator"),
    )
    logger.enable("rtclient")
    try:
        yield found
    finally:
        logger.disable("rtclient")
        logger.remove(sink)
        threading.excepthook, sys.unraisablehook = previous_thread_hook, previous_unraisable
        logging.getLogger().removeHandler(handler)


@pytest.fixture
def client_loop(escapes: Escapes) -> Iterator[LoopThread]:
    """One loop thread for the clients of a test, reporting unhandled asyncio errors."""

    async def install() -> None:
        asyncio.get_running_loop().set_exception_handler(escapes.asyncio_handler)

    loop_thread = LoopThread("fuzz-client-loop", on_start=install).start()
    try:
        yield loop_thread
    finally:
        loop_thread.stop()


@dataclasses.dataclass
class Env:
    emulator: Emulator
    loop_thread: LoopThread
    escapes: Escapes


@pytest.fixture
def env(emulator: Emulator, client_loop: LoopThread, escapes: Escapes) -> Env:
    return Env(emulator, client_loop, escapes)


# --------------------------------------------------------------------------- harness
class Harness:
    """One client on the shared emulator, running one program."""

    def __init__(self, env: Env, settle_s: float = SETTLE_S) -> None:
        self.env = env
        self.settle_s = settle_s
        self.emu = env.emulator
        self._ids = itertools.count(1)
        self._markers: dict[str, threading.Event] = {}
        self.tickets: list[tuple[str, ResponseTicket]] = []
        self.held: str | None = None  # the held phantom's response.done, as a text
        self.held_creates = 0
        self.oob_requests = 0
        self.client = RealtimeClient(
            api_key="sk-test",
            base_url=self.emu.url,
            loopback_only=True,
            loop_thread=env.loop_thread,
            executor=InlineExecutor(),
            tools=[echo],
            session={"output_modalities": ["text"]},
            connect_timeout=SETTLE_S,
            close_timeout=SETTLE_S,
        )
        self.client.on("rate_limits.updated", self._on_marker, raw=True)
        self.client.connect()
        assert self.client.call_id is not None
        self.session: Session = self.emu.session(self.client.call_id)

    def close(self) -> None:
        self.client.close()

    def uid(self) -> str:
        return f"fz{next(self._ids)}"

    def inject(self, text: str) -> None:
        self.session.inject(text.replace("@ID@", self.uid()))

    # -- barriers --------------------------------------------------------------------
    def _on_marker(self, event: dict[str, Any]) -> None:
        marker = self._markers.get(str(event.get("event_id")))
        if marker is not None:
            marker.set()

    def _wait(self, ready: Callable[[float], bool], what: str) -> None:
        """Wait up to ``settle_s`` for ``ready(timeout)``, in slices, failing at once if
        the client lost its connection or an exception escaped meanwhile."""
        deadline = time.monotonic() + self.settle_s
        while not ready(max(0.0, min(_SLICE_S, deadline - time.monotonic()))):
            escapes = self.env.escapes.snapshot()
            assert not escapes and not self.client.closed, (
                f"waiting for {what}: closed={self.client.closed}, exceptions escaped: {escapes}"
            )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{what} did not happen within {self.settle_s}s: gate {self.client.gate!r}"
                )

    def barrier(self) -> None:
        """Both directions drained: the emulator has handled every client event sent so
        far (their replies are on the wire), and the client has dispatched every server
        event sent before a marker (the data channel is ordered)."""
        sync_id = f"event_sync_{self.uid()}"
        try:
            self.client.send_event({"type": "input_audio_buffer.clear", "event_id": sync_id})
        except RealtimeError as exc:
            raise AssertionError(
                f"barrier: {exc!r}; exceptions escaped: {self.env.escapes.snapshot()}"
            ) from exc
        self._wait(
            lambda t: self.emu.wait_for(
                lambda: any(e.get("event_id") == sync_id for e in self.session.client_events), t
            ),
            "the emulator to receive a sync event",
        )
        marker_id = f"event_marker_{self.uid()}"
        marker = self._markers[marker_id] = threading.Event()
        self.session.inject(
            _dumps({"type": "rate_limits.updated", "event_id": marker_id, "rate_limits": []})
        )
        try:
            self._wait(marker.wait, "the dispatcher to deliver a marker event")
        finally:
            del self._markers[marker_id]

    def _emulator_idle(self) -> bool:
        counters = self.session.counters
        return counters.get("responses", 0) == sum(counters.get(s, 0) for s in FINAL_STATUSES)

    def settle(self) -> None:
        """Release a held phantom; then every ticket settles, the emulator is idle and
        the gate has nothing outstanding, across a full barrier."""
        self.release()
        for kind, ticket in self.tickets:
            self._wait(partial(_settled, ticket), f"a {kind} request ({ticket!r}) to settle")
        for _ in range(20):
            self._wait(lambda t: self.emu.wait_for(self._emulator_idle, t), "the emulator to idle")
            self.barrier()
            if self._emulator_idle() and self.client.stats()["outstanding"] == 0:
                return
        raise AssertionError(f"never quiescent: gate {self.client.gate!r}, {self.client.stats()}")

    # -- ops -------------------------------------------------------------------------
    def run(self, program: list[Op]) -> None:
        for op in program:
            try:
                self.apply(op)
            except RealtimeError as exc:  # e.g. ClosedError: the connection was lost
                raise AssertionError(
                    f"{op} raised {exc!r}; exceptions escaped: {self.env.escapes.snapshot()}"
                ) from exc
        self.settle()

    def apply(self, op: Op) -> None:
        if isinstance(op, Request):
            self.request(op.kind)
        elif isinstance(op, Inject):
            self.inject(op.text)
        elif isinstance(op, Oversized):
            self.session.inject(_oversized(op, self.uid()))
        elif isinstance(op, Replay):
            candidates = self.replayable(op.kind)
            if candidates:
                self.session.inject(candidates[op.pick % len(candidates)])
        elif isinstance(op, Faults):
            self.session.set_faults(**dict(op.changes))
        elif isinstance(op, Phantom):
            self.phantom(op)
        elif isinstance(op, Settle):
            self.settle()
        else:  # pragma: no cover
            raise TypeError(op)

    def request(self, kind: str) -> ResponseTicket:
        client = self.client
        if kind == "plain":
            ticket = client.request_response()
        elif kind == "params":
            ticket = client.request_response(instructions="Answer briefly.")
        elif kind == "oob":
            self.oob_requests += 1
            ticket = client.request_response(conversation="none")
        else:
            text = f"hello {self.uid()}" if kind == "text" else 'use echo({"x": "hi"})'
            sent = client.send_text(text)
            assert sent is not None
            ticket = sent
        self.tickets.append((kind, ticket))
        return ticket

    def replayable(self, kind: str) -> list[str]:
        """Copies of events already sent: ``safe`` - anything but a ``response.created``
        and events that carry a function call (see their own tests for those two);
        ``created`` - only ``response.created``; ``calls`` - only function-call events."""
        out = []
        for event in self.session.server_events:
            raw = set(event) == {"type", "raw"} and event["type"] is None
            text = str(event["raw"]) if raw else _dumps(event)
            if len(text) > 100_000 or str(event.get("event_id", "")).startswith("event_marker_"):
                continue
            created = event.get("type") == "response.created"
            calls = _carries_call(event)
            if (
                (kind == "safe" and not created and not calls)
                or (kind == "created" and created)
                or (kind == "calls" and calls)
            ):
                out.append(text)
        return out

    def phantom(self, op: Phantom) -> None:
        if not op.out_of_band:
            self.settle()  # the API allows an in-band response only when none is active
        rid, tag = f"resp_phantom{self.uid()}", self.uid()
        metadata = {"rtclient_ticket": f"rtc_not_ours_{tag}"} if op.ticket else None
        output: list[Any] = []
        middle: list[dict[str, Any]] = []
        for index, part in enumerate(op.middle):
            item_id = f"item_phantom{tag}_{index}"
            if part == "limits":
                middle.append({"type": "rate_limits.updated", "rate_limits": []})
                continue
            if part == "text":
                item = _message_item(item_id, "phantom")
                inner = [
                    {"type": "response.output_text.delta", "delta": "phan", "content_index": 0},
                    {"type": "response.output_text.delta", "delta": "tom", "content_index": 0},
                ]
            else:
                item = _call_item(item_id, f"call_phantom{tag}_{index}", "echo")
                inner = [
                    {
                        "type": "response.function_call_arguments.done",
                        "call_id": item["call_id"],
                        "name": "echo",
                        "arguments": item["arguments"],
                    }
                ]
            ids = {"response_id": rid, "item_id": item_id, "output_index": index}
            middle.append(
                {
                    "type": "response.output_item.added",
                    "response_id": rid,
                    "output_index": index,
                    "item": item,
                }
            )
            middle += [{**ids, **e} for e in inner]
            middle.append(
                {
                    "type": "response.output_item.done",
                    "response_id": rid,
                    "output_index": index,
                    "item": item,
                }
            )
            output.append(item)
        conversation = not op.out_of_band
        events = []
        if op.created:
            events.append(
                {
                    "type": "response.created",
                    "response": _response(
                        rid, "in_progress", conversation=conversation, metadata=metadata, output=[]
                    ),
                }
            )
        events += middle
        done = {
            "type": "response.done",
            "response": _response(
                rid, "completed", conversation=conversation, metadata=metadata, output=output
            ),
        }
        for event in events:
            self.session.inject(
                _dumps({"type": event["type"], "event_id": f"event_{self.uid()}", **event})
            )
        done_text = _dumps({"type": "response.done", "event_id": f"event_{self.uid()}", **done})
        if op.hold and op.created and conversation:
            self.barrier()  # the client knows the response is active (no create crosses it)
            self.held = done_text
            self.held_creates = self.gate_creates_received()
        else:
            self.session.inject(done_text)

    def release(self) -> None:
        """End a held in-band phantom. Until its done, the client must send no create
        of its own: the server has a response active (the API would reject it)."""
        if self.held is None:
            return
        self.barrier()  # gives a wrongly sent create time to arrive
        sent = self.gate_creates_received() - self.held_creates
        done, self.held = self.held, None
        self.session.inject(done)
        assert sent == 0, f"{sent} response.create sent while a server response was active"

    def gate_creates_received(self) -> int:
        return sum(
            1
            for e in self.session.client_events
            if e.get("type") == "response.create"
            and (e.get("response") or {}).get("conversation") != "none"
        )

    # -- properties ------------------------------------------------------------------
    def check_safety(self) -> None:
        """No escape, every waiter settled, nothing lost, no double create, and the client
        still serves a request. No generated lie names one of our events, so every
        request must succeed and the emulator must never reject a create."""
        assert not self.client.closed, f"connection lost: {self.env.escapes.snapshot()}"
        for kind, ticket in self.tickets:
            error = ticket.exception(0)
            if error is not None:
                assert isinstance(error, RealtimeError), f"{kind}: untyped {error!r}"
                raise AssertionError(f"{kind} failed: {error!r}")
        probe = self.request("plain")
        self.settle()
        assert probe.result(0)["response"]["status"] == "completed"
        stats = self.client.stats()
        assert stats["lost"] == 0, stats
        assert stats["outstanding"] == 0, stats
        creates = [e for e in self.session.client_events if e.get("type") == "response.create"]
        ids = Counter(e.get("event_id") for e in creates)
        assert all(n == 1 for n in ids.values()), f"a create was sent twice: {ids}"
        gate_creates = [
            e for e in creates if (e.get("response") or {}).get("conversation") != "none"
        ]
        for create in gate_creates:
            assert create["response"]["metadata"]["rtclient_ticket"] == create["event_id"]
        assert len(creates) - len(gate_creates) == self.oob_requests
        assert len(gate_creates) == stats["creates"] - stats["rollbacks"]
        assert stats["creates"] <= stats["accepted"], "more creates than requests"
        outputs = Counter(
            (e.get("item") or {}).get("call_id")
            for e in self.session.client_events
            if e.get("type") == "conversation.item.create"
            and (e.get("item") or {}).get("type") == "function_call_output"
        )
        assert all(n == 1 for n in outputs.values()), f"a tool call got two outputs: {outputs}"
        rejected = [e for e in self.session.errors if e["error"].get("code") == ACTIVE_RESPONSE]
        assert not rejected, f"the client caused {ACTIVE_RESPONSE}: {rejected}"
        assert stats["failed"] == 0, stats
        ours = {e.get("event_id") for e in creates}
        for kind, ticket in self.tickets:
            metadata = ticket.result(0)["response"].get("metadata") or {}
            key = "rtclient_oob" if kind == "oob" else "rtclient_ticket"
            assert metadata.get(key) in ours, f"{kind} served by a response not ours"
        escapes = self.env.escapes.take()
        assert not escapes, f"exceptions escaped: {escapes}"

    def check_counters(self) -> None:
        """Each counter against what the emulator saw, as README's ``stats()`` list
        defines it: ``events_received`` every message that is a JSON object with a string
        type (known or not), ``malformed_events`` the others, ``unknown_events`` those of
        a type outside the API's set, ``server_errors`` the ``error`` events,
        ``rejections`` the active-response errors naming one of our creates,
        ``creates_sent`` the creates on the wire, ``tool_calls`` the calls run (one
        output each), ``tool_errors`` the error outputs sent."""
        events = self.session.server_events
        sent = Counter(classify(e) for e in events)
        errors = [e for e in events if e.get("type") == "error"]
        outputs = [
            str((e.get("item") or {}).get("output"))
            for e in self.session.client_events
            if e.get("type") == "conversation.item.create"
            and (e.get("item") or {}).get("type") == "function_call_output"
        ]
        stats = self.client.stats()
        want = {
            "events_received": sent["known"] + sent["unknown"],
            "malformed_events": sent["malformed"],
            "unknown_events": sent["unknown"],
            "server_errors": len(errors),
            "rejections": len(
                {
                    (e.get("error") or {}).get("event_id")
                    for e in errors
                    if _error_code(e) == ACTIVE_RESPONSE
                }
                & {
                    e.get("event_id")
                    for e in self.session.client_events
                    if e.get("type") == "response.create"
                }
            ),
            "creates_sent": sum(
                1 for e in self.session.client_events if e.get("type") == "response.create"
            ),
            "tool_calls": len(outputs),
            "tool_errors": sum(1 for o in outputs if _is_error_output(o)),
        }
        assert {k: stats[k] for k in want} == want


def _error_code(event: dict[str, Any]) -> Any:
    error = event.get("error")
    return error.get("code") if isinstance(error, dict) else None


def _is_error_output(output: str) -> bool:
    """A tool output rtclient made from a failure: ``{"error": "..."}``."""
    try:
        value = json.loads(output)
    except ValueError:
        return False
    return isinstance(value, dict) and set(value) == {"error"}


def _settled(ticket: ResponseTicket, timeout: float) -> bool:
    try:
        ticket.exception(timeout)
    except (TimeoutError, concurrent.futures.TimeoutError):  # distinct types before 3.11
        return False
    return True


def _carries_call(event: dict[str, Any]) -> bool:
    kind = event.get("type")
    if kind == "response.function_call_arguments.done":
        return True
    if kind in ("response.output_item.added", "response.output_item.done"):
        item = event.get("item")
        return isinstance(item, dict) and item.get("type") == "function_call"
    if kind == "response.done":
        response = event.get("response")
        output = response.get("output") if isinstance(response, dict) else None
        return isinstance(output, list) and any(
            isinstance(i, dict) and i.get("type") == "function_call" for i in output
        )
    return False


def _oversized(op: Oversized, uid: str) -> str:
    """A message of exactly ``op.nbytes`` UTF-8 bytes (padding is ASCII)."""
    if op.shape == "known":
        head = {"type": "rate_limits.updated", "event_id": f"event_{uid}", "rate_limits": []}
    else:
        head = {"type": "emulator.fuzz_oversized", "event_id": f"event_{uid}"}
    text = _dumps({**head, "fuzz_padding": ""})
    body = text[:-2] + "x" * (op.nbytes - len(text.encode())) + '"}'
    if op.shape == "malformed":
        body = body[:-1] + " "  # the closing brace is missing
    assert len(body.encode()) == op.nbytes
    return body


def run_program(
    env: Env, program: list[Op], *checks: Callable[[Harness], None], settle_s: float = SETTLE_S
) -> None:
    env.escapes.take()
    harness = Harness(env, settle_s)
    try:
        harness.run(program)
        for check in checks:
            check(harness)
    finally:
        harness.close()


# --------------------------------------------------------------------------- tests
_PHASES = [Phase.explicit, Phase.generate]
if os.environ.get("RTCLIENT_FUZZ_SHRINK"):
    _PHASES.append(Phase.shrink)


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=_PHASES,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much,
        ],
    )


@pytest.mark.timeout(120)
@fuzz_settings(max_examples=30)
@given(program=programs(adversarial_ops))
@example(
    program=[
        Request("plain"),
        Inject('{"type": "emulator.made_up", "event_id": "event_@ID@"}'),
        Inject("{not json"),
        Oversized(MAX_MESSAGE_BYTES, "known"),
        Faults((("drop_response_created", True),)),
        Request("tool"),
        Phantom(out_of_band=False, ticket=True, middle=("text", "call"), hold=True),
        Request("text"),
        Request("oob"),
        Inject(
            _dumps(
                {
                    "type": "error",
                    "error": {"code": ACTIVE_RESPONSE, "message": "no", "event_id": "evt_not_ours"},
                }
            )
        ),
        Settle(),
        Replay(3),
    ]
)
def test_fuzzed_streams_keep_every_promise(env: Env, program: list[Op]) -> None:
    run_program(env, program, Harness.check_safety)


@pytest.mark.timeout(60)
@fuzz_settings(max_examples=15)
@given(program=programs(counted_ops))
@example(program=[Inject(_dumps({"type": f"made.up.{i}"})) for i in range(4)])
@example(
    program=[
        Request("tool"),
        Inject(_dumps({"type": "error", "error": {"code": ACTIVE_RESPONSE, "event_id": "x"}})),
        Inject(
            _dumps(
                {
                    "type": "response.function_call_arguments.done",
                    "call_id": "call_lie@ID@",
                    "name": "nope",
                    "arguments": "{}",
                }
            )
        ),
        Inject("{not json"),
    ]
)
def test_fuzzed_streams_counters_count_what_they_say(env: Env, program: list[Op]) -> None:
    run_program(env, program, Harness.check_safety, Harness.check_counters)


@pytest.mark.timeout(90)
@fuzz_settings(max_examples=10)
@given(program=programs(odd_texts().map(Inject)))
@example(program=[Inject(_dumps({"type": "response.done", "response": "oops"}))])
def test_fuzzed_odd_typed_fields_do_not_escape(env: Env, program: list[Op]) -> None:
    run_program(env, program, Harness.check_safety)


@pytest.mark.timeout(90)
@fuzz_settings(max_examples=6)
@given(program=programs(st.builds(Replay, st.integers(0, 50), st.just("created"))))
@example(program=[Request("plain"), Settle(), Replay(0, "created")])
def test_fuzzed_duplicate_response_created(env: Env, program: list[Op]) -> None:
    run_program(env, program, Harness.check_safety, settle_s=WEDGED_S)


@pytest.mark.timeout(90)
@fuzz_settings(max_examples=6)
@given(program=programs(st.builds(Replay, st.integers(0, 50), st.just("calls"))))
@example(program=[Request("tool"), Settle(), Replay(2, "calls")])
def test_fuzzed_duplicate_function_call_events(env: Env, program: list[Op]) -> None:
    run_program(env, program, Harness.check_safety)
