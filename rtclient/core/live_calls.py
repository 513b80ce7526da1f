"""Responses delegation's function calls, and the one create that continues them
(part of :mod:`.live`).

The backend's stream reaches the app as ``response.event`` envelopes. Two readers see
it, in order:

* **the gate** (loop thread, at once): the nested ``response.created`` fills its
  ``active`` slot - ours if the envelope's ``client_event_id`` is our ticket, the
  server's or a browser's otherwise, exactly as a VAD response is "not ours" on
  Realtime - and ``response.completed``/``.failed``/``.incomplete`` frees it, so a
  queued create leaves with no thread hop;
* **the calls** (dispatcher thread, one step later): a completed ``function_call`` item
  is run like a Realtime tool (its schema, validation and ``timeout``:
  :func:`~rtclient.tools.call_tool` on the executor), and each call gets exactly one
  ``function_call_output`` (``response.item.create``).

When every call of every finished backend response has its output **on the wire**
(the outcome of the write, not the hand-over), exactly one ``response.create`` is
requested through the gate (:class:`~rtclient.core.gate.GateMachine`): claimed before
it is sent, rolled back and re-fired if the write fails, never sent while a backend
response runs, re-armed if the server still finds one running (its
``conversation_already_has_active_response``). The create carries only its
``event_id`` - the gate's ticket - which the server echoes as the envelopes'
``client_event_id``. Calls of a ``response.failed``/``.incomplete`` response get no
output (the server refuses them): their results reach the voice model as thinking.
An output that is too large becomes an error output the model can read; one that
cannot be written at all is reported (``rtclient.output_dropped``) and its batch gets
no follow-up.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from rtclient.core import events as ev
from rtclient.core.gate import ACTIVE_RESPONSE_CODE, Effects, GateMachine, Note, Ticket, Trigger
from rtclient.core.live_protocol import AppendKind, Batch, CallWork, brief, client_event
from rtclient.core.live_text import estimate_tokens
from rtclient.effects import Effect, Later, Send, Settle, Start
from rtclient.errors import ClosedError, MessageTooLargeError, ServerError
from rtclient.tools.call import ToolOutcome, call_tool, failed
from rtclient.tools.schema import ToolSpec, error_output

# The nested Responses events that end a backend response.
TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})
# What the server answers a response.create with while a backend response runs (not
# documented for GPT-Live; the emulator, like the Realtime API, says this).
BUSY_CODES = frozenset({ACTIVE_RESPONSE_CODE})
_KEPT = 1024  # finished call ids (a repeat never runs twice) and sent output ids

Out = Callable[[Send], list[Effect]]
"""The core's way out for a send (held until ``session.started``, or sent now)."""
Thinking = Callable[[AppendKind, list[str], None, bool], list[Effect]]


class BackendCalls:
    """The function calls of a Responses-delegation session (under the core's lock)."""

    def __init__(
        self,
        *,
        specs: dict[str, ToolSpec],
        gate: GateMachine,
        clock: Callable[[], float],
        counters: dict[str, int],
        notes: list[Note],
        out: Out,
        thinking: Thinking,
        budget: int,
    ) -> None:
        self.specs = specs
        self.gate = gate
        self._clock = clock
        self.counters = counters
        self._notes = notes
        self._out = out
        self._thinking = thinking
        self._budget = budget
        self.closed = False
        self._batches: dict[str, Batch] = {}
        self._current: dict[str | None, str] = {}  # delegation id (None: app) -> response
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._outputs: OrderedDict[str, CallWork] = OrderedDict()  # output event id -> call

    def open_calls(self) -> int:
        return sum(not c.sent for b in self._batches.values() for c in b.calls.values())

    # -- the gate (loop thread) -------------------------------------------------------

    def gate_sees(self, envelope: Mapping[str, Any], inner: Mapping[str, Any]) -> list[Effect]:
        """A nested ``response.created`` or terminal event, for the gate."""
        kind = inner["type"]
        response = inner.get("response")
        response_id = response.get("id") if isinstance(response, Mapping) else None
        if not isinstance(response_id, str):
            return []
        client_event_id = envelope.get("client_event_id")
        ours = client_event_id if isinstance(client_event_id, str) else None
        now = self._clock()
        if kind == "response.created":
            return self.gate_fx(self.gate.on_created(response_id, ours, out_of_band=False, now=now))
        event = dict(envelope)
        return self.gate_fx(
            self.gate.on_done(response_id, event, out_of_band=False, now=now, ticket_id=ours)
        )

    def rejected(self, error: ServerError) -> list[Effect]:
        """An ``error`` naming our create in flight."""
        code = ACTIVE_RESPONSE_CODE if error.code in BUSY_CODES else error.code
        return self.gate_fx(self.gate.on_error(code, error.event_id, error, self._clock()))

    def request(self, trigger: Trigger) -> list[Effect]:
        return self.gate_fx(self.gate.request(trigger, self._clock()))

    def create_sent(self, ticket: Ticket, error: BaseException | None) -> list[Effect]:
        if error is None:
            self._notes.append(("INFO", "RESPONSE_CREATE", "{} sent", (ticket.event_id,)))
            return [Later(self.gate.confirm_timeout, "watchdog", ticket)]
        retry = not isinstance(error, ClosedError | MessageTooLargeError)
        return self.gate_fx(self.gate.rollback(ticket, error, self._clock(), retry=retry))

    def gate_fx(self, fx: Effects) -> list[Effect]:
        """The gate's effects in the core's vocabulary: waiters by trigger, the create."""
        self._notes.extend(fx.notes)
        out: list[Effect] = []
        for trigger, event in fx.resolved:
            out.append(Settle(("response", trigger.reason), event, keep=True))
        for trigger, error in fx.failed:
            out.append(Settle(("response", trigger.reason), error, keep=True))
        if fx.send is not None:
            create = {"type": "response.create", "event_id": fx.send.event_id}
            out += self._out(Send(create, kind="create", ref=fx.send))
        return out

    # -- the calls (dispatcher thread) -------------------------------------------------

    def step(self, envelope: Mapping[str, Any], inner: Mapping[str, Any]) -> list[Effect]:
        """A nested event, in order: which response a delegation's items belong to,
        a call to start, a response over."""
        delegation_id = envelope.get("delegation_id")
        delegation_id = delegation_id if isinstance(delegation_id, str) else None
        kind = inner["type"]
        response = inner.get("response")
        response_id = response.get("id") if isinstance(response, Mapping) else None
        if kind == "response.created" and isinstance(response_id, str):
            self._current[delegation_id] = response_id
            return []
        if kind == "response.output_item.done":
            item = inner.get("item")
            if isinstance(item, Mapping) and item.get("type") == "function_call":
                return self._start(item, delegation_id)
            return []
        if kind in TERMINAL:
            found = response_id if isinstance(response_id, str) else None
            batch = self._batches.get(found or "") or self._batches.get(
                self._current.get(delegation_id) or f"delegation:{delegation_id}", None
            )
            if batch is None:
                return []
            batch.done = True
            batch.failed = kind != "response.completed"  # outputs on their way are refused
            return self._progress(batch)
        return []

    def _start(self, item: Mapping[str, Any], delegation_id: str | None) -> list[Effect]:
        if item.get("status") not in (None, "completed"):
            return []
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
        if not isinstance(call_id, str) or not isinstance(name, str):
            self.counters["malformed_events"] += 1
            return []
        if call_id in self._finished or any(call_id in b.calls for b in self._batches.values()):
            return []  # a repeat: a call runs once and is answered once
        key = self._current.get(delegation_id) or f"delegation:{delegation_id}"
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = Batch(key, delegation_id)
        text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        call = CallWork(call_id, name, text, batch)
        batch.calls[call_id] = call
        self.counters["tool_calls"] += 1
        spec = self.specs.get(name)
        if spec is None:
            return self.outcome(call, failed(f"unknown tool {name!r}"), timed_out=False)
        fx: list[Effect] = [Start(call, call_tool, (spec, text))]
        if spec.timeout is not None:
            fx.append(Later(spec.timeout, "tool", call))
        return fx

    def timed_out(self, call: CallWork) -> list[Effect]:
        spec = self.specs.get(call.name)
        timeout = spec.timeout if spec is not None else None
        return self.outcome(call, failed(f"{call.name} timed out after {timeout}s"), timed_out=True)

    def outcome(self, call: CallWork, outcome: ToolOutcome, *, timed_out: bool) -> list[Effect]:
        """The first of a call's result and its timeout decides its output."""
        if call.claimed:
            if not timed_out:
                self.counters["tool_late_results"] += 1
            return []
        call.claimed = True
        call.output, call.error = outcome.output, outcome.error
        if outcome.error is not None:
            self.counters["tool_errors"] += 1
            if timed_out:
                self.counters["tool_timeouts"] += 1
        return self._deliver(call, outcome.output)

    def _deliver(self, call: CallWork, text: str) -> list[Effect]:
        if self.closed:
            self.counters["undelivered_outputs"] += 1
            return [client_event("output_dropped", call_id=call.call_id, reason="session_closed")]
        if call.batch.failed:
            return self._discard(call, text)
        item = {"type": "function_call_output", "call_id": call.call_id, "output": text}
        event = ev.with_event_id({"type": "response.item.create", "item": item})
        self._outputs[event["event_id"]] = call
        while len(self._outputs) > _KEPT:
            self._outputs.popitem(last=False)
        return self._out(Send(event, kind="output", ref=call))

    def _discard(self, call: CallWork, text: str) -> list[Effect]:
        """A call of a failed/incomplete response: its output would be refused, so the
        voice model gets the result as silent context instead (cut to one append)."""
        self.counters["discarded_calls"] += 1
        call.sent = True
        note = f"Result of {call.name} (its backend response ended early): {text}"
        while estimate_tokens(note) > self._budget:
            note = note[: max(1, len(note) * self._budget // estimate_tokens(note) - 1)]
        return self._thinking("thinking", [note], None, False) + self._progress(call.batch)

    def sent(self, send: Send, error: BaseException | None) -> list[Effect]:
        """The outcome of writing an output."""
        call: CallWork = send.ref
        if error is None:
            call.sent = True
            self.counters["outputs_sent"] += 1
            return self._progress(call.batch)
        self._outputs.pop(str(send.event.get("event_id")), None)
        if isinstance(error, MessageTooLargeError) and call.error is None:
            message = (
                f"the result of {call.name} is {error.size} bytes, more than the "
                f"{error.limit} bytes one event may carry; it was not delivered"
            )
            call.error = message
            self.counters["oversized_outputs"] += 1
            return self._deliver(call, error_output(message))
        self.counters["undelivered_outputs"] += 1
        call.batch.closed = True  # no follow-up without this output
        return [client_event("output_dropped", call_id=call.call_id, reason="not_sent",
                             error=brief(error))]  # fmt: skip

    def refused(self, event_id: str, error: ServerError) -> list[Effect] | None:
        """An ``error`` naming one of our outputs (None: not ours)."""
        call = self._outputs.pop(event_id, None)
        if call is None:
            return None
        self.counters["refused_outputs"] += 1
        return [client_event("output_refused", call_id=call.call_id, error=brief(error))]

    def _progress(self, batch: Batch) -> list[Effect]:
        """When every call of every finished backend response has its output on the
        wire, ask the gate for ONE ``response.create`` continuing them all (the server
        counts open calls across the session: a partial batch is refused)."""
        if batch.done and not batch.ready and all(c.sent for c in batch.calls.values()):
            batch.ready = True
        if self.open_calls() or any(not b.done for b in self._batches.values()):
            return []
        ready = [b for b in self._batches.values() if b.ready and not b.closed]
        for b in list(self._batches.values()):
            del self._batches[b.response_id]
            for call_id in b.calls:
                self._finished[call_id] = None
        while len(self._finished) > _KEPT:
            self._finished.popitem(last=False)
        wanted = [b for b in ready if not b.failed and b.calls]
        if not wanted or self.closed:
            return []
        self.counters["followups_requested"] += 1
        return self.request(Trigger("tool_calls:" + "+".join(b.response_id for b in wanted)))
