"""One response: its state, and the stream of events that carries it to the client.

The event order is the API's. A message item::

    response.output_item.added, conversation.item.added,
    response.content_part.added, [output_audio_buffer.started],
    response.output_text.delta* | response.output_audio_transcript.delta*,
    response.output_text.done  | response.output_audio.done + ..._transcript.done,
    response.content_part.done, response.output_item.done, conversation.item.done

(a reasoning model's message item carries ``phase``: ``"commentary"`` for a preamble,
``"final_answer"`` for the answer); a function call item::

    response.output_item.added, conversation.item.added,
    response.function_call_arguments.delta*, response.function_call_arguments.done,
    response.output_item.done, conversation.item.done

all between ``response.created`` and ``response.done`` (out-of-band responses skip the
``conversation.item.*`` events: their items join no conversation). Cancellation is
cooperative: every pause between deltas is also a wait on the response's cancel
future, after which the open item is closed ``incomplete`` and ``response.done``
reports ``cancelled`` with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import inspect
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from .audio import AudioPlayback
from .conversation import Conversation
from .faults import Faults
from .ids import IdFactory
from .model import Model, ModelRequest, Output, Pace, TextReply, ToolCall, split_text

_PCM16_24K_BYTES_PER_MS = 48


class ResponseCancelled(Exception):
    """Raised inside the stream when a cancel was requested."""


class OutputTokensExhausted(Exception):
    """Raised inside the stream when ``max_output_tokens`` is reached."""


@dataclass(eq=False)
class Response:
    id: str
    in_conversation: bool
    conversation_id: str | None
    params: dict[str, Any]
    output_modalities: list[str]
    max_output_tokens: int | str
    metadata: dict[str, str] | None
    audio_output: dict[str, Any]
    client_event_id: str | None
    origin: str
    loop: asyncio.AbstractEventLoop
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None
    output: list[dict[str, Any]] = field(default_factory=list)
    output_tokens: int = 0
    input_tokens: int = 0
    cancel_reason: str | None = None
    audio_started: bool = False
    audio_ms: int = 0
    """Milliseconds of speech generated (what the client plays after ``response.done``)."""
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.cancel_requested: asyncio.Future[None] = self.loop.create_future()
        self.finished: asyncio.Future[None] = self.loop.create_future()

    @property
    def speaks(self) -> bool:
        return "audio" in self.output_modalities

    def request_cancel(self, reason: str) -> None:
        if self.cancel_reason is None and not self.finished.done():
            self.cancel_reason = reason
            self.cancel_requested.set_result(None)

    def to_json(self) -> dict[str, Any]:
        usage = None
        if self.status != "in_progress":
            usage = {
                "total_tokens": self.input_tokens + self.output_tokens,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "input_token_details": {
                    "cached_tokens": 0,
                    "text_tokens": self.input_tokens,
                    "audio_tokens": 0,
                },
                "output_token_details": {
                    "text_tokens": 0 if self.speaks else self.output_tokens,
                    "audio_tokens": self.output_tokens if self.speaks else 0,
                },
            }
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": self.status,
            "status_details": self.status_details,
            "output": copy.deepcopy(self.output),
            "conversation_id": self.conversation_id,
            "output_modalities": list(self.output_modalities),
            "max_output_tokens": self.max_output_tokens,
            "audio": {"output": copy.deepcopy(self.audio_output)},
            "usage": usage,
            "metadata": self.metadata,
        }


class ResponseHost(Protocol):
    """What a response needs from its session."""

    conversation: Conversation
    ids: IdFactory
    media: str
    playback: AudioPlayback | None

    @property
    def pace(self) -> Pace: ...

    @property
    def faults(self) -> Faults: ...

    @property
    def model(self) -> Model: ...

    def emit(self, event: dict[str, Any]) -> None: ...

    def send_raw(self, text: str) -> None: ...

    def model_request(self, response: Response) -> ModelRequest: ...

    def response_finished(self, response: Response) -> None: ...


class ResponseStream:
    """Runs one response on the emulator's loop, from ``response.created`` to ``.done``."""

    def __init__(self, host: ResponseHost, response: Response) -> None:
        self._host = host
        self._r = response
        self._open: tuple[dict[str, Any], int, str] | None = None  # item, index, so far

    async def run(self) -> None:
        r, host = self._r, self._host
        try:
            await self._before_created()
            outputs = await self._plan()
            for index, output in enumerate(outputs):
                self._check()
                if isinstance(output, ToolCall):
                    await self._function_call(index, output)
                else:
                    await self._message(index, output.text, output.phase)
            r.status, r.status_details = "completed", None
        except ResponseCancelled:
            self._close_open_item("incomplete")
            r.status = "cancelled"
            r.status_details = {"type": "cancelled", "reason": r.cancel_reason}
        except OutputTokensExhausted:
            self._close_open_item("incomplete")
            r.status = "incomplete"
            r.status_details = {"type": "incomplete", "reason": "max_output_tokens"}
        except asyncio.CancelledError:
            raise  # the session is closing: nobody is left to tell
        except Exception as exc:
            logger.exception("emulator: response {} failed", r.id)
            self._close_open_item("incomplete")
            r.status = "failed"
            r.status_details = {
                "type": "failed",
                "error": {
                    "type": "server_error",
                    "code": "emulator_model_error",
                    "message": str(exc),
                },
            }
        if host.faults.delay_response_done > 0:
            await asyncio.sleep(host.faults.delay_response_done)
        host.response_finished(r)

    async def _before_created(self) -> None:
        host, faults = self._host, self._host.faults
        if faults.malformed_json:
            host.send_raw('{"type": "response.created", "event_id": "event_tru')
        if faults.unknown_event:
            host.emit({"type": "emulator.unknown_event", "note": "injected by the emulator"})
        if faults.oversized_event_bytes > 0:
            host.emit(
                {
                    "type": "rate_limits.updated",
                    "rate_limits": [
                        {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 1.0}
                    ],
                    "emulator_padding": "x" * faults.oversized_event_bytes,
                }
            )
        if faults.delay_response_created > 0:
            await asyncio.sleep(faults.delay_response_created)
        if not faults.drop_response_created:
            host.emit({"type": "response.created", "response": self._r.to_json()})

    async def _plan(self) -> list[Output]:
        request = self._host.model_request(self._r)
        self._r.input_tokens = sum(len(str(item)) // 4 for item in request.items)
        result = self._host.model(request)
        if inspect.isawaitable(result):
            result = await result
        outputs = list(result)
        for output in outputs:
            if not isinstance(output, TextReply | ToolCall):
                raise TypeError(f"a model must return TextReply/ToolCall items, got {output!r}")
        return outputs

    def _check(self) -> None:
        if self._r.cancel_reason is not None:
            raise ResponseCancelled

    async def _pause(self) -> None:
        delay = self._host.pace.delay
        if delay > 0 and not self._r.cancel_requested.done():
            await asyncio.wait([self._r.cancel_requested], timeout=delay)
        else:
            await asyncio.sleep(0)
        self._check()

    def _spend_token(self) -> None:
        limit = self._r.max_output_tokens
        if isinstance(limit, int) and self._r.output_tokens >= limit:
            raise OutputTokensExhausted
        self._r.output_tokens += 1

    def _ids(self, item: dict[str, Any], index: int) -> dict[str, Any]:
        return {"response_id": self._r.id, "item_id": item["id"], "output_index": index}

    def _add_item(self, item: dict[str, Any], index: int) -> None:
        host, r = self._host, self._r
        host.emit(
            {
                "type": "response.output_item.added",
                "response_id": r.id,
                "output_index": index,
                "item": item,
            }
        )
        if r.in_conversation:
            previous = host.conversation.insert(item)
            host.emit(
                {"type": "conversation.item.added", "previous_item_id": previous, "item": item}
            )

    def _item_done(self, item: dict[str, Any], index: int) -> None:
        host, r = self._host, self._r
        host.emit(
            {
                "type": "response.output_item.done",
                "response_id": r.id,
                "output_index": index,
                "item": item,
            }
        )
        if r.in_conversation:
            host.emit(
                {
                    "type": "conversation.item.done",
                    "previous_item_id": host.conversation.previous_id(item["id"]),
                    "item": item,
                }
            )
        r.output.append(copy.deepcopy(item))
        self._open = None

    async def _message(self, index: int, text: str, phase: str | None = None) -> None:
        host, r = self._host, self._r
        item: dict[str, Any] = {
            "id": host.ids.new("item"),
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        if phase is not None:  # a reasoning model's preamble or final answer
            item["phase"] = phase
        self._add_item(item, index)
        part = {"type": "audio", "transcript": ""} if r.speaks else {"type": "text", "text": ""}
        host.emit(
            {
                "type": "response.content_part.added",
                **self._ids(item, index),
                "content_index": 0,
                "part": part,
            }
        )
        # The item holds its content part from now on, as the API's does: a barge-in
        # may truncate it while it is still being generated.
        if r.speaks:
            item["content"] = [{"type": "output_audio", "transcript": ""}]
        else:
            item["content"] = [{"type": "output_text", "text": ""}]
        self._open = (item, index, "")
        if r.speaks and host.playback is not None and not r.audio_started:
            r.audio_started = True
            host.playback.start(r.id)
            host.emit({"type": "output_audio_buffer.started", "response_id": r.id})
        for piece in split_text(text, host.pace.deltas):
            await self._pause()
            self._spend_token()
            self._open = (item, index, self._open[2] + piece)
            ids = {**self._ids(item, index), "content_index": 0}
            if not r.speaks:
                host.emit({"type": "response.output_text.delta", **ids, "delta": piece})
                continue
            audio_ms = host.pace.audio_ms_per_delta
            r.audio_ms += audio_ms
            if r.in_conversation:
                host.conversation.record_audio(item["id"], audio_ms)
            if host.playback is not None:
                host.playback.add(r.id, audio_ms)
            elif host.media == "websocket":
                silence = bytes(_PCM16_24K_BYTES_PER_MS * audio_ms)
                host.emit(
                    {
                        "type": "response.output_audio.delta",
                        **ids,
                        "delta": base64.b64encode(silence).decode(),
                    }
                )
            host.emit({"type": "response.output_audio_transcript.delta", **ids, "delta": piece})
        self._close_open_item("completed")

    async def _function_call(self, index: int, call: ToolCall) -> None:
        host = self._host
        arguments = call.arguments_json()
        item: dict[str, Any] = {
            "id": host.ids.new("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": call.name,
            "call_id": host.ids.new("call", 16),
            "arguments": "",
        }
        self._add_item(item, index)
        self._open = (item, index, "")
        for piece in split_text(arguments, host.pace.call_deltas):
            await self._pause()
            self._spend_token()
            self._open = (item, index, self._open[2] + piece)
            host.emit(
                {
                    "type": "response.function_call_arguments.delta",
                    **self._ids(item, index),
                    "call_id": item["call_id"],
                    "delta": piece,
                }
            )
        self._close_open_item("completed")

    def _close_open_item(self, status: str) -> None:
        """Finish the item being streamed (all of it, or what was sent before a stop)."""
        if self._open is None:
            return
        item, index, so_far = self._open
        host, r = self._host, self._r
        ids = self._ids(item, index)
        if item["type"] == "function_call":
            item["arguments"] = so_far
            if status == "completed":
                host.emit(
                    {
                        "type": "response.function_call_arguments.done",
                        **ids,
                        "call_id": item["call_id"],
                        "name": item["name"],
                        "arguments": so_far,
                    }
                )
        else:
            if r.speaks:
                host.emit({"type": "response.output_audio.done", **ids, "content_index": 0})
                host.emit(
                    {
                        "type": "response.output_audio_transcript.done",
                        **ids,
                        "content_index": 0,
                        "transcript": so_far,
                    }
                )
                part = {"type": "audio", "transcript": so_far}
                heard = "" if host.conversation.is_truncated(item["id"]) else so_far
                item["content"] = [{"type": "output_audio", "transcript": heard}]
            else:
                host.emit(
                    {"type": "response.output_text.done", **ids, "content_index": 0, "text": so_far}
                )
                part = {"type": "text", "text": so_far}
                item["content"] = [{"type": "output_text", "text": so_far}]
            host.emit(
                {"type": "response.content_part.done", **ids, "content_index": 0, "part": part}
            )
        item["status"] = status
        self._item_done(item, index)
