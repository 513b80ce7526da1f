"""Running tools: any Executor, one output per call, one follow-up per response.

A function call is started as soon as its arguments are complete, on the user's
``concurrent.futures.Executor`` (a thread pool by default; a ``ProcessPoolExecutor``
works for picklable, module-level tools). Each output is sent as its own
``function_call_output`` the moment it is ready. The follow-up ``response.create`` is
requested **once per originating response**: when that response is done *and* every one
of its calls has an output on its way (a result, an error, or a timeout).

Ordering rule, and why calls have two phases: a call is first *claimed* (by its result
or its timeout, whichever comes first - under the lock), then its output is handed to
the bridge, and only when the bridge reports the *actual* send (on the wire) is it
counted as *sent*. The batch is complete when every call is sent. Counting earlier
would let the last tool request the follow-up while another output was still on its
way - or was refused - and the model would answer without it.

An output that cannot go out is never dropped silently. One larger than the
connection accepts in one message is replaced by an error output the model can read
(its size and the limit) and counted in ``oversized_outputs``; one that cannot be sent
at all (the bridge stays full, the connection is gone) is counted in
``undelivered_outputs`` and fails the tool round, so whoever waits for its follow-up
gets the error instead of an answer made without that result.

The runner does no I/O and starts no thread: each method returns what should happen
next, as data - :class:`~rtclient.effects.Start` (run a tool on the executor),
:class:`~rtclient.effects.Later` (a timeout, a retry), :class:`OutputReady` (an
output to send), :class:`RoundComplete` (every output of a response is on the wire:
time for its one follow-up) and :class:`RoundFailed` (an output could not be
delivered). The protocol core turns those into sends and gate requests; the shell
reports back what happened (``finished``, ``delivered``, ``timer``).

Out-of-band responses (``conversation: "none"``) are not in the conversation, so
their function calls have no place to put an output: they are not run, and no output
or follow-up is ever sent for them. Their calls are listed in the ``response.done``
that the out-of-band request's ticket returns.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any

from rtclient.effects import Later, Start
from rtclient.errors import BridgeFullError, MessageTooLargeError
from rtclient.logs import logger
from rtclient.tools.schema import ToolSpec, build_spec, error_output

_SEND_RETRIES = 20  # a full bridge is retried this many times, _SEND_RETRY_DELAY apart
_SEND_RETRY_DELAY = 0.05
_FINISHED_KEPT = 1024  # response and call ids of finished rounds, for de-duplication


# The server events ToolRunner.on_event reads (the client hands it nothing else).
TOOL_EVENTS = frozenset(
    {
        "response.created",
        "response.output_item.added",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.done",
    }
)


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is an object, else an empty one (a malformed field is ignored)."""
    return value if isinstance(value, Mapping) else {}


def _out_of_band(response: Mapping[str, Any]) -> bool:
    """Outside the conversation (an explicit ``conversation_id: null``): no outputs."""
    return "conversation_id" in response and response["conversation_id"] is None


def _result_output(result: Any) -> str:
    return result if isinstance(result, str) else json.dumps(result, default=str)


@dataclasses.dataclass(eq=False)
class ToolCall:
    """One function call of one response, and how it ended."""

    call_id: str
    name: str
    arguments: str
    response_id: str | None
    output: str | None = None
    error: str | None = None
    claimed: bool = False
    sent: bool = False
    wants_response: bool = True
    started_at: float = 0.0


@dataclasses.dataclass(eq=False)
class _Batch:
    response_id: str
    calls: dict[str, ToolCall] = dataclasses.field(default_factory=dict)
    response_done: bool = False
    followup_requested: bool = False


@dataclasses.dataclass
class ToolStats:
    tool_calls: int = 0
    tool_errors: int = 0
    tool_timeouts: int = 0
    late_results: int = 0
    oversized_outputs: int = 0
    undelivered_outputs: int = 0


@dataclasses.dataclass(frozen=True, eq=False)
class OutputReady:
    """``text`` is ready to go out as ``call``'s ``function_call_output``."""

    call: ToolCall
    text: str
    fallback: bool = False  # already the error output that replaced an oversized one
    attempt: int = 0


@dataclasses.dataclass(frozen=True, eq=False)
class RoundComplete:
    """Every call of ``response_id`` has its output on the wire (and the response is
    done): the round's one follow-up may be requested."""

    response_id: str
    calls: list[ToolCall]


@dataclasses.dataclass(frozen=True, eq=False)
class RoundFailed:
    """An output of ``response_id``'s round could not be delivered."""

    response_id: str
    error: BaseException


Step = Start | Later | OutputReady | RoundComplete | RoundFailed


class ToolRunner:
    """Starts calls, hands out their outputs, and completes one round per response.

    Thread-safe (one lock, never held while user code runs); returns steps, never
    performs them (see the module docstring). ``on_event`` reads server events in order
    (:data:`TOOL_EVENTS`); ``finished`` takes a started tool's future; ``delivered`` the
    outcome of an output's actual send; ``timer`` a :class:`Later` that fired.
    """

    def __init__(self, tools: Iterable[Callable[..., Any] | ToolSpec]) -> None:
        self.specs: dict[str, ToolSpec] = {}
        for t in tools:
            spec = t if isinstance(t, ToolSpec) else build_spec(t)
            if spec.name in self.specs:
                raise ValueError(f"two tools are named {spec.name!r}")
            self.specs[spec.name] = spec
        self._lock = threading.Lock()
        self._batches: dict[str, _Batch] = {}
        self._names: dict[str, str] = {}  # call_id -> tool name, from output_item.added
        self._out_of_band: set[str] = set()  # responses outside the conversation
        # Rounds already followed up (bounded): a duplicated or replayed call event must
        # never run a tool twice nor send a second output and follow-up.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self.stats = ToolStats()

    def session_tools(self) -> list[dict[str, Any]]:
        return [spec.session_tool() for spec in self.specs.values()]

    # -- events (dispatcher thread) ------------------------------------------------

    def on_event(self, event: Mapping[str, Any]) -> list[Step]:
        """One server event, in order. Fields of the wrong type are ignored: a
        malformed event must not stop the tools of the well-formed ones."""
        kind = event.get("type")
        steps: list[Step] = []
        if kind == "response.created":
            response = _mapping(event.get("response"))
            if _out_of_band(response):
                self._out_of_band.add(str(response.get("id")))
        elif kind == "response.output_item.added":
            item = _mapping(event.get("item"))
            if item.get("type") == "function_call":  # names, for servers whose
                self._names[str(item.get("call_id"))] = str(item.get("name"))  # args.done lacks one
        elif kind == "response.function_call_arguments.done":
            self._start_call(event, event.get("response_id"), steps)
        elif kind == "response.output_item.done":
            item = _mapping(event.get("item"))
            if item.get("type") == "function_call":
                self._start_call(item, event.get("response_id"), steps)
        elif kind == "response.done":
            response = _mapping(event.get("response"))
            rid = response.get("id")
            if not isinstance(rid, str) or rid in self._finished:
                return steps
            if _out_of_band(response):
                self._out_of_band.discard(rid)  # its calls are the requester's to read
                return steps
            output = response.get("output")
            for item in output if isinstance(output, list) else []:
                if isinstance(item, dict) and item.get("type") == "function_call":
                    self._start_call(item, rid, steps)
            with self._lock:
                batch = self._batches.get(rid)
                if batch is not None:
                    batch.response_done = True
                    steps.extend(self._take_round(batch))
        return steps

    def _start_call(self, call: Mapping[str, Any], response_id: Any, steps: list[Step]) -> None:
        """Start a call described by an arguments.done event or a function_call item."""
        call_id = str(call.get("call_id"))
        name = call.get("name") or self._names.get(call_id)
        self._start(call_id, str(name), call.get("arguments"), response_id, steps)

    def _start(
        self, call_id: str, name: str, arguments: Any, response_id: Any, steps: list[Step]
    ) -> None:
        rid = response_id if isinstance(response_id, str) else f"unknown:{call_id}"
        if rid in self._out_of_band:
            self._names.pop(call_id, None)
            logger.debug("[TOOL] {} ({}) is out of band: not run", name, call_id)
            return
        args_text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        self._names.pop(call_id, None)
        with self._lock:
            if call_id in self._finished or any(call_id in b.calls for b in self._batches.values()):
                return  # already started (arguments.done, output_item.done, done, replays)
            batch = self._batches.setdefault(rid, _Batch(rid))
            spec = self.specs.get(name)
            call = ToolCall(call_id, name, args_text, rid, started_at=time.monotonic())
            call.wants_response = spec.start_response if spec else True
            batch.calls[call_id] = call
            self.stats.tool_calls += 1
        if spec is None:
            steps.extend(self._finish(call, None, f"unknown tool {name!r}"))
            return
        try:  # here, on the runner's thread: a bad call never reaches the executor
            raw = json.loads(args_text) if args_text.strip() else {}
            if not isinstance(raw, dict):
                raise ValueError("arguments must be a JSON object")
            args, kwargs = spec.validate(raw)
        except Exception as exc:  # a model's own validator may raise anything
            why = str(exc) if isinstance(exc, ValueError | TypeError) else repr(exc)
            steps.extend(self._finish(call, None, f"bad arguments for {name}: {why}"))
            return
        logger.debug("[TOOL] start {} ({}) for {}", name, call_id, rid)
        steps.append(Start(call, spec.fn, args, kwargs))
        if spec.timeout is not None:
            steps.append(Later(spec.timeout, "tool_timeout", call))

    # -- outcomes (executor, loop thread) ------------------------------------------

    def finished(
        self, call: ToolCall, future: Future[Any] | None, submit_error: BaseException | None
    ) -> list[Step]:
        """A started tool ended (``future``), or could not be submitted at all."""
        if future is None:
            return self._finish(call, None, f"could not start {call.name}: {submit_error!r}")
        if future.cancelled():
            return self._finish(call, None, f"{call.name} was cancelled")
        exc = future.exception()
        if exc is not None:
            return self._finish(call, None, f"{call.name} raised {type(exc).__name__}: {exc}")
        try:
            output = _result_output(future.result())
        except Exception as ser:  # not JSON-serialisable even with default=str
            return self._finish(call, None, f"{call.name} returned an unserialisable result: {ser}")
        return self._finish(call, output, None)

    def timer(self, later: Later) -> list[Step]:
        """A :class:`Later` this runner asked for fired."""
        if later.kind == "tool_timeout":
            call: ToolCall = later.ref
            timeout = self.specs[call.name].timeout if call.name in self.specs else None
            steps = self._finish(
                call, None, f"{call.name} timed out after {timeout}s", timed_out=True
            )
            if steps:
                logger.warning(
                    "[TOOL] {} ({}) still running after {}s; its thread is left running and "
                    "its result will be discarded",
                    call.name,
                    call.call_id,
                    timeout,
                )
            return steps
        ready: OutputReady = later.ref  # "output_retry": the bridge was full
        return [dataclasses.replace(ready, attempt=ready.attempt + 1)]

    def _finish(
        self, call: ToolCall, output: str | None, error: str | None, *, timed_out: bool = False
    ) -> list[Step]:
        """Claim the call (first of result/timeout wins) and hand out its output."""
        with self._lock:
            if call.claimed:
                if not timed_out:
                    self.stats.late_results += 1
                    logger.warning(
                        "[TOOL] {} ({}) finished after its timeout; result discarded",
                        call.name,
                        call.call_id,
                    )
                return []
            call.claimed = True
            call.output, call.error = output, error
            if error is not None:
                self.stats.tool_errors += 1
                if timed_out:
                    self.stats.tool_timeouts += 1
        if error is not None:
            logger.warning("[TOOL] {} ({}): {}", call.name, call.call_id, error)
        text = output if error is None and output is not None else error_output(str(error))
        return [OutputReady(call, text)]

    def delivered(self, ready: OutputReady, exc: BaseException | None) -> list[Step]:
        """The outcome of one send of ``ready`` (usually on the loop thread)."""
        call = ready.call
        if exc is None:
            with self._lock:
                call.sent = True
                batch = self._batches.get(call.response_id or "")
                return self._take_round(batch) if batch else []
        if isinstance(exc, MessageTooLargeError) and not ready.fallback:
            size = exc.size if exc.size is not None else len(ready.text.encode())
            message = (
                f"the result of {call.name} is {size} bytes, more than the {exc.limit} bytes "
                "one event may carry on this connection, so it was not delivered; ask for "
                "less"
            )
            with self._lock:
                call.output, call.error = None, message
                self.stats.tool_errors += 1
                self.stats.oversized_outputs += 1
            logger.warning("[TOOL] {} ({}): {}", call.name, call.call_id, message)
            return [OutputReady(call, error_output(message), fallback=True)]
        if isinstance(exc, BridgeFullError) and ready.attempt < _SEND_RETRIES:
            return [Later(_SEND_RETRY_DELAY, "output_retry", ready)]
        logger.error("[TOOL] output of {} ({}) not delivered: {!r}", call.name, call.call_id, exc)
        with self._lock:
            call.error = f"output not delivered: {exc!r}"
            self.stats.undelivered_outputs += 1
            batch = self._batches.pop(call.response_id or "", None)
            if batch is None or batch.followup_requested:
                return []
            batch.followup_requested = True
            self._remember_finished(batch)
        return [RoundFailed(batch.response_id, exc)]

    def _take_round(self, batch: _Batch) -> list[Step]:
        """Under the lock: the round, once, when every output is on the wire."""
        if batch.followup_requested or not batch.response_done:
            return []
        if not all(c.sent for c in batch.calls.values()):
            return []
        batch.followup_requested = True
        del self._batches[batch.response_id]
        self._remember_finished(batch)
        return [RoundComplete(batch.response_id, list(batch.calls.values()))]

    def _remember_finished(self, batch: _Batch) -> None:
        """Under the lock: the round's response and call ids, kept (bounded) for de-dup."""
        for key in (batch.response_id, *batch.calls):
            self._finished[key] = None
        while len(self._finished) > _FINISHED_KEPT:
            self._finished.popitem(last=False)
