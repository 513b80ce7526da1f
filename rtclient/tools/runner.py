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
from concurrent.futures import Executor, Future
from typing import Any

from rtclient._bounded import TEXT, clip
from rtclient.errors import BridgeFullError, MessageTooLargeError
from rtclient.logs import logger
from rtclient.tools.failures import warn_raised
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


class ToolRunner:
    """Starts calls, sends their outputs, and requests one follow-up per response.

    ``send_output(call_id, output)`` hands an output to the bridge without blocking and
    returns the future of its actual send. ``request_followup(response_id, calls)`` is
    called once per response whose calls all have outputs on the wire; it asks the
    gate for the follow-up if any call ``wants_response``. ``fail_followup(response_id,
    error)`` is called instead when an output could not be delivered.
    ``schedule(delay, fn)`` runs ``fn`` after ``delay`` seconds (the loop's timer).
    """

    def __init__(
        self,
        tools: Iterable[Callable[..., Any] | ToolSpec],
        executor: Executor,
        *,
        send_output: Callable[[str, str], Future[Any]],
        request_followup: Callable[[str, list[ToolCall]], None],
        fail_followup: Callable[[str, BaseException], None],
        schedule: Callable[[float, Callable[[], None]], None],
    ) -> None:
        self.specs: dict[str, ToolSpec] = {}
        for t in tools:
            spec = t if isinstance(t, ToolSpec) else build_spec(t)
            if spec.name in self.specs:
                raise ValueError(f"two tools are named {spec.name!r}")
            self.specs[spec.name] = spec
        self._executor = executor
        self._send_output = send_output
        self._request_followup = request_followup
        self._fail_followup = fail_followup
        self._schedule = schedule
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

    def on_event(self, event: Mapping[str, Any]) -> None:
        """One server event, in order (dispatcher thread). Fields of the wrong type are
        ignored: a malformed event must not stop the tools of the well-formed ones."""
        kind = event.get("type")
        if kind == "response.created":
            response = _mapping(event.get("response"))
            if "conversation_id" in response and response["conversation_id"] is None:
                self._out_of_band.add(str(response.get("id")))
        elif kind == "response.output_item.added":
            item = _mapping(event.get("item"))
            if item.get("type") == "function_call":  # names, for servers whose
                self._names[str(item.get("call_id"))] = str(item.get("name"))  # args.done lacks one
        elif kind == "response.function_call_arguments.done":
            self._start_call(event, event.get("response_id"))
        elif kind == "response.output_item.done":
            item = _mapping(event.get("item"))
            if item.get("type") == "function_call":
                self._start_call(item, event.get("response_id"))
        elif kind == "response.done":
            response = _mapping(event.get("response"))
            rid = response.get("id")
            if not isinstance(rid, str) or rid in self._finished:
                return
            if "conversation_id" in response and response["conversation_id"] is None:
                self._out_of_band.discard(rid)  # its calls are the requester's to read
                return
            output = response.get("output")
            for item in output if isinstance(output, list) else []:
                if isinstance(item, dict) and item.get("type") == "function_call":
                    self._start_call(item, rid)
            with self._lock:
                batch = self._batches.get(rid)
                if batch is None:
                    return
                batch.response_done = True
                followup = self._take_followup(batch)
            if followup is not None:
                self._request_followup(rid, followup)

    def _start_call(self, call: Mapping[str, Any], response_id: Any) -> None:
        """Start a call described by an arguments.done event or a function_call item."""
        call_id = str(call.get("call_id"))
        name = call.get("name") or self._names.get(call_id)
        self._start(call_id, str(name), call.get("arguments"), response_id)

    def _start(self, call_id: str, name: str, arguments: Any, response_id: Any) -> None:
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
            self._finish(call, None, f"unknown tool {name!r}")
            return
        try:  # here, on the runner's thread: a bad call never reaches the executor
            raw = json.loads(args_text) if args_text.strip() else {}
            if not isinstance(raw, dict):
                raise ValueError("arguments must be a JSON object")
            args, kwargs = spec.validate(raw)
        except Exception as exc:  # a model's own validator may raise anything
            why = str(exc) if isinstance(exc, ValueError | TypeError) else repr(exc)
            self._finish(call, None, f"bad arguments for {name}: {why}")
            return
        logger.debug("[TOOL] start {} ({}) for {}", name, call_id, rid)
        try:
            future = self._executor.submit(spec.fn, *args, **kwargs)
        except Exception as exc:
            self._finish(call, None, f"could not start {name}: {exc!r}")
            return
        future.add_done_callback(lambda f: self._on_done(call, f))
        if spec.timeout is not None:
            self._schedule(spec.timeout, lambda: self._on_timeout(call, spec.timeout or 0.0))

    def _on_done(self, call: ToolCall, future: Future[Any]) -> None:
        if future.cancelled():
            self._finish(call, None, f"{call.name} was cancelled")
            return
        exc = future.exception()
        if exc is not None:
            if self._finish(call, None, f"{call.name} raised {type(exc).__name__}: {exc}"):
                warn_raised(self.specs.get(call.name), call.name, call.call_id, exc)
        else:
            try:
                output = _result_output(future.result())
            except Exception as ser:  # not JSON-serialisable even with default=str
                self._finish(call, None, f"{call.name} returned an unserialisable result: {ser}")
                return
            self._finish(call, output, None)

    def _on_timeout(self, call: ToolCall, timeout: float) -> None:
        if self._finish(call, None, f"{call.name} timed out after {timeout}s", timed_out=True):
            logger.warning(
                "[TOOL] {} ({}) still running after {}s; its thread is left running and "
                "its result will be discarded",
                call.name,
                call.call_id,
                timeout,
            )

    def _finish(
        self, call: ToolCall, output: str | None, error: str | None, *, timed_out: bool = False
    ) -> bool:
        """Claim the call (first of result/timeout wins), send its output, maybe follow up."""
        with self._lock:
            if call.claimed:
                if not timed_out:
                    self.stats.late_results += 1
                    logger.warning(
                        "[TOOL] {} ({}) finished after its timeout; result discarded",
                        call.name,
                        call.call_id,
                    )
                return False
            call.claimed = True
            call.output, call.error = output, error if error is None else clip(error, TEXT)
            if error is not None:
                self.stats.tool_errors += 1
                if timed_out:
                    self.stats.tool_timeouts += 1
        if error is not None:
            logger.warning("[TOOL] {} ({}): {}", call.name, call.call_id, error)
        text = output if error is None and output is not None else error_output(str(error))
        self._deliver(call, text, fallback=False, attempt=0)
        return True

    def _deliver(self, call: ToolCall, text: str, *, fallback: bool, attempt: int) -> None:
        """Hand ``text`` to the bridge; what happens next depends on the actual send."""
        try:
            future = self._send_output(call.call_id, text)
        except Exception as exc:  # not even queued (closed, full)
            future = Future()
            future.set_exception(exc)
        future.add_done_callback(
            lambda f: self._delivered(call, text, f.exception(), fallback=fallback, attempt=attempt)
        )

    def _delivered(
        self, call: ToolCall, text: str, exc: BaseException | None, *, fallback: bool, attempt: int
    ) -> None:
        """The outcome of one send of ``call``'s output (usually on the loop thread)."""
        if exc is None:
            with self._lock:
                call.sent = True
                batch = self._batches.get(call.response_id or "")
                followup = self._take_followup(batch) if batch else None
            if followup is not None and call.response_id is not None:
                self._request_followup(call.response_id, followup)
            return
        if isinstance(exc, MessageTooLargeError) and not fallback:
            size = exc.size if exc.size is not None else len(text.encode())
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
            self._deliver(call, error_output(message), fallback=True, attempt=0)
            return
        if isinstance(exc, BridgeFullError) and attempt < _SEND_RETRIES:
            self._schedule(
                _SEND_RETRY_DELAY,
                lambda: self._deliver(call, text, fallback=fallback, attempt=attempt + 1),
            )
            return
        logger.error("[TOOL] output of {} ({}) not delivered: {!r}", call.name, call.call_id, exc)
        with self._lock:
            call.error = f"output not delivered: {exc!r}"
            self.stats.undelivered_outputs += 1
            batch = self._batches.pop(call.response_id or "", None)
            if batch is not None:
                self._remember_finished(batch)
        if batch is not None and not batch.followup_requested:
            batch.followup_requested = True
            self._fail_followup(batch.response_id, exc)

    def _take_followup(self, batch: _Batch) -> list[ToolCall] | None:
        """Under the lock: the calls to follow up on, once, when the batch is complete."""
        if batch.followup_requested or not batch.response_done:
            return None
        if not all(c.sent for c in batch.calls.values()):
            return None
        batch.followup_requested = True
        del self._batches[batch.response_id]
        self._remember_finished(batch)
        return list(batch.calls.values())

    def _remember_finished(self, batch: _Batch) -> None:
        """Under the lock: the round's response and call ids, kept (bounded) for de-dup."""
        for key in (batch.response_id, *batch.calls):
            self._finished[key] = None
        while len(self._finished) > _FINISHED_KEPT:
            self._finished.popitem(last=False)
