"""The scripted Responses backend of a Live session under Responses delegation.

When the voice model delegates, or the app sends ``response.create``, a backend
response runs and its Responses streaming events reach the client wrapped in
``response.event`` envelopes (``delegation_id``: the delegation it serves, ``null`` for
an app-started one). What it answers is decided by the emulator's model callable - the
same :class:`~..model.ScriptedModel` as the Realtime side - over the backend's items
(the delegated task as a user message, the app's ``response.item.create`` items, the
calls and outputs so far): a function tool named in the task is called (``get_weather``,
``get_weather({"city": "Oslo"})``, ``get_weather*3``), outputs are answered
``Tool results: name -> output.``, anything else ``You said: <task>``.

A function call for the app arrives as the inner ``response.output_item.done`` whose
item is ``{type: "function_call", status: "completed", call_id, name, arguments}``; the
response then **completes with its calls unanswered**. The app sends one
``response.item.create {item: {type: "function_call_output", call_id, output}}`` per
call, then one ``response.create``; the continuation's text is spoken by the voice.

Rules (the Realtime API's one-active-response rule, applied to the backend):

* ``response.create`` while a backend response runs is refused with the Realtime
  side's ``conversation_already_has_active_response`` error naming it - the race the
  client's gate prevents;
* with :attr:`~.rules.LiveRules.refuse_partial_tool_outputs`, a ``response.create``
  while any call of the session lacks its output is refused (``tool_outputs_incomplete``);
* an output for an unknown call id, a second output for a call, or one for a call of a
  response that did not complete is refused.

The backend's faults are the Realtime response's: ``delay_response_created``,
``drop_response_created``, ``delay_response_done`` (the run is still active), and
``malformed_json``/``unknown_event``/``oversized_event_bytes`` before each
``response.created``. Its pace is the emulator's :class:`~..model.Pace`.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from ..errors import ClientEventError, active_response_error
from ..faults import Faults
from ..ids import IdFactory
from ..model import Model, ModelRequest, Output, Pace, TextReply, ToolCall, split_text
from .rules import LiveRules


@dataclass
class BackendCall:
    call_id: str
    name: str
    arguments: str
    response_id: str
    delegation_id: str | None
    output: str | None = None
    discarded: bool = False


@dataclass(eq=False)
class BackendResponse:
    id: str
    delegation_id: str | None
    client_event_id: str | None
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "in_progress"
    sequence: int = 0
    text: str = ""
    task: asyncio.Task[None] | None = None


class BackendHost(Protocol):
    ids: IdFactory

    @property
    def pace(self) -> Pace: ...

    @property
    def faults(self) -> Faults: ...

    @property
    def rules(self) -> LiveRules: ...

    @property
    def model(self) -> Model: ...

    def backend_config(self) -> dict[str, Any]: ...

    def emit_fault_events(self) -> None: ...

    def response_event(
        self, event: dict[str, Any], delegation_id: str | None, client_event_id: str | None
    ) -> None: ...

    def backend_finished(self, response: BackendResponse) -> None: ...

    def count(self, name: str) -> None: ...


class ResponsesBackend:
    def __init__(self, host: BackendHost) -> None:
        self._host = host
        self.items: list[dict[str, Any]] = []
        self.calls: dict[str, BackendCall] = {}
        self.active: BackendResponse | None = None
        self._outputs_since_response: list[BackendCall] = []

    # ------------------------------------------------------------------ commands
    def delegate(self, delegation_id: str, task: str, response_id: str) -> BackendResponse:
        """The voice model delegated ``task``: a response for it starts now."""
        self.items.append(_user_message(task))
        return self._start(response_id, delegation_id, None)

    def add_item(self, item: dict[str, Any]) -> None:
        """``response.item.create``: one Responses input item for the backend."""
        if item.get("type") == "function_call_output":
            self._add_output(item)
            return
        if item.get("type") == "message" and isinstance(item.get("content"), str):
            item = _user_message(item["content"], role=str(item.get("role", "user")))
        self.items.append(copy.deepcopy(item))

    def create(self, client_event_id: str | None) -> BackendResponse:
        """``response.create``: continue with the outputs given, or answer the app."""
        self._host.count("creates")
        if self.active is not None:
            self._host.count("rejections")
            raise active_response_error(self.active.id)
        open_calls = [
            c.call_id for c in self.calls.values() if c.output is None and not c.discarded
        ]
        if open_calls and self._host.rules.refuse_partial_tool_outputs:
            raise ClientEventError(
                "tool_outputs_incomplete",
                "Every function call needs its function_call_output before response.create; "
                f"missing: {', '.join(open_calls)}.",
            )
        owners = {call.delegation_id for call in self._outputs_since_response}
        delegation_id = owners.pop() if len(owners) == 1 else None
        return self._start(self._host.ids.new("resp"), delegation_id, client_event_id)

    def cancel_all(self) -> None:
        """The session ended: stop the running response (nobody is left to tell)."""
        active, self.active = self.active, None
        if active is not None and active.task is not None:
            active.task.cancel()

    async def idle(self) -> None:
        """Return once no backend response runs."""
        while (active := self.active) is not None and active.task is not None:
            await asyncio.wait([active.task])

    # ------------------------------------------------------------------ helpers
    def _add_output(self, item: dict[str, Any]) -> None:
        call_id = item["call_id"]
        call = self.calls.get(call_id)
        if call is None:
            raise ClientEventError(
                "invalid_value",
                f"No tool call found for function call output with call_id {call_id}.",
                param="item.call_id",
            )
        if call.discarded:
            raise ClientEventError(
                "invalid_value",
                f"The call {call_id} belongs to a response that did not complete; its "
                "output is not accepted.",
                param="item.call_id",
            )
        if call.output is not None:
            raise ClientEventError(
                "tool_output_already_given",
                f"The call {call_id} already has a function_call_output.",
                param="item.call_id",
            )
        output = item["output"]
        call.output = output if isinstance(output, str) else json.dumps(output)
        self.items.append(
            {"type": "function_call_output", "call_id": call_id, "output": call.output}
        )
        self._outputs_since_response.append(call)

    def _start(
        self, response_id: str, delegation_id: str | None, client_event_id: str | None
    ) -> BackendResponse:
        response = BackendResponse(response_id, delegation_id, client_event_id)
        self.active = response
        self._outputs_since_response = []
        self._host.count("responses")
        response.task = asyncio.get_running_loop().create_task(
            self._run(response), name=f"emulator-live-{response.id}"
        )
        return response

    def _emit(self, response: BackendResponse, event: dict[str, Any]) -> None:
        event = {**event, "sequence_number": response.sequence}
        response.sequence += 1
        self._host.response_event(event, response.delegation_id, response.client_event_id)

    def _snapshot(self, response: BackendResponse, usage: dict[str, Any] | None) -> dict[str, Any]:
        """A lifecycle snapshot: no input, instructions, tools or output (as the API's)."""
        config = self._host.backend_config()
        return {
            "id": response.id,
            "object": "response",
            "created_at": response.created_at,
            "status": response.status,
            "model": config.get("model"),
            "output": [],
            "parallel_tool_calls": config.get("parallel_tool_calls", True),
            "tool_choice": config.get("tool_choice", "auto"),
            "tools": [],
            "instructions": None,
            "error": None,
            "incomplete_details": None,
            "metadata": {},
            "usage": usage,
        }

    async def _run(self, response: BackendResponse) -> None:
        host = self._host
        try:
            host.emit_fault_events()
            faults = host.faults
            if faults.delay_response_created > 0:
                await asyncio.sleep(faults.delay_response_created)
            if not faults.drop_response_created:
                self._emit(
                    response,
                    {"type": "response.created", "response": self._snapshot(response, None)},
                )
            self._emit(
                response,
                {"type": "response.in_progress", "response": self._snapshot(response, None)},
            )
            outputs = await self._plan()
            for index, output in enumerate(outputs):
                if isinstance(output, ToolCall):
                    await self._function_call(response, index, output)
                else:
                    await self._message(response, index, output.text)
            response.status = "completed"
        except asyncio.CancelledError:
            self._discard(response)
            raise
        except Exception as exc:
            logger.exception("emulator: backend response {} failed", response.id)
            response.status = "failed"
            self._discard(response)
            failed = self._snapshot(response, None)
            failed["error"] = {"code": "server_error", "message": str(exc)}
            self._emit(response, {"type": "response.failed", "response": failed})
        if host.faults.delay_response_done > 0:
            await asyncio.sleep(host.faults.delay_response_done)
        if response.status == "completed":
            tokens = max(1, len(response.text) // 4)
            usage: dict[str, Any] = {
                "input_tokens": sum(len(str(item)) // 4 for item in self.items),
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
            }
            usage["total_tokens"] = usage["input_tokens"] + tokens
            self._emit(
                response,
                {"type": "response.completed", "response": self._snapshot(response, usage)},
            )
        if self.active is response:
            self.active = None
        host.backend_finished(response)

    def _discard(self, response: BackendResponse) -> None:
        for call in self.calls.values():
            if call.response_id == response.id and call.output is None:
                call.discarded = True

    async def _plan(self) -> list[Output]:
        config = self._host.backend_config()
        tools = [t for t in config.get("tools") or [] if t.get("type") == "function"]
        request = ModelRequest(
            items=copy.deepcopy(self.items),
            tools=copy.deepcopy(tools),
            tool_choice=config.get("tool_choice", "auto"),
            instructions=config.get("instructions"),
            output_modalities=["text"],
        )
        result = self._host.model(request)
        if inspect.isawaitable(result):
            result = await result
        outputs = list(result)
        for output in outputs:
            if not isinstance(output, TextReply | ToolCall):
                raise TypeError(f"a model must return TextReply/ToolCall items, got {output!r}")
        return outputs

    async def _pause(self) -> None:
        await asyncio.sleep(max(0.0, self._host.pace.delay))

    async def _function_call(self, response: BackendResponse, index: int, call: ToolCall) -> None:
        ids = self._host.ids
        arguments = call.arguments_json()
        item: dict[str, Any] = {
            "id": ids.new("fc"),
            "type": "function_call",
            "status": "in_progress",
            "call_id": ids.new("call", 16),
            "name": call.name,
            "arguments": "",
        }
        where = {"item_id": item["id"], "output_index": index}
        self._emit(
            response,
            {"type": "response.output_item.added", "output_index": index, "item": dict(item)},
        )
        for piece in split_text(arguments, self._host.pace.call_deltas):
            await self._pause()
            self._emit(
                response,
                {"type": "response.function_call_arguments.delta", **where, "delta": piece},
            )
        self._emit(
            response,
            {"type": "response.function_call_arguments.done", **where, "arguments": arguments},
        )
        item.update(status="completed", arguments=arguments)
        self.items.append({k: item[k] for k in ("type", "call_id", "name", "arguments")})
        self.calls[item["call_id"]] = BackendCall(
            item["call_id"], call.name, arguments, response.id, response.delegation_id
        )
        self._emit(
            response, {"type": "response.output_item.done", "output_index": index, "item": item}
        )

    async def _message(self, response: BackendResponse, index: int, text: str) -> None:
        item: dict[str, Any] = {
            "id": self._host.ids.new("msg"),
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        self._emit(
            response,
            {"type": "response.output_item.added", "output_index": index, "item": dict(item)},
        )
        empty = {"type": "output_text", "text": "", "annotations": []}
        self._emit(response, {"type": "response.content_part.added", **where, "part": empty})
        for piece in split_text(text, self._host.pace.deltas):
            await self._pause()
            self._emit(
                response,
                {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []},
            )
        self._emit(
            response, {"type": "response.output_text.done", **where, "text": text, "logprobs": []}
        )
        part = {"type": "output_text", "text": text, "annotations": []}
        self._emit(response, {"type": "response.content_part.done", **where, "part": part})
        item.update(status="completed", content=[part])
        self.items.append({"type": "message", "role": "assistant", "content": [part]})
        response.text = (response.text + " " + text).strip()
        self._emit(
            response, {"type": "response.output_item.done", "output_index": index, "item": item}
        )


def _user_message(text: str, role: str = "user") -> dict[str, Any]:
    return {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}
