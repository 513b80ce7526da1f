"""The session and the conversation, waitable: calls that send a client event and
block until the server event that answers it (``session.updated``,
``conversation.item.retrieved/deleted/truncated``) or the error naming it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from rtclient.core import events as ev
from rtclient.core.realtime import ANSWERED_BY, RealtimeProtocol
from rtclient.errors import EventValidationError
from rtclient.runtime.dispatcher import Catalog

if TYPE_CHECKING:
    from openai.types.realtime import RealtimeSessionCreateRequest as Session
    from openai.types.realtime.conversation_item import ConversationItem


class ConversationCalls:
    """Mixed into :class:`rtclient.RealtimeClient` (which provides the shell's
    ``_send_awaited`` and ``_may_block``, its core and its catalog)."""

    _core: RealtimeProtocol
    _catalog: Catalog
    _client_turns: bool

    if TYPE_CHECKING:

        def _may_block(self, what: str, blocking: bool = True) -> None: ...
        def _send_awaited(
            self, event: dict[str, Any], key: tuple[str, str], timeout: float | None, what: str
        ) -> Any: ...

    @overload
    def update_session(
        self, *, timeout: float | None = ..., raw: Literal[False] = False, **fields: Any
    ) -> Session: ...
    @overload
    def update_session(
        self, *, timeout: float | None = ..., raw: Literal[True], **fields: Any
    ) -> dict[str, Any]: ...
    def update_session(
        self, *, timeout: float | None = 10.0, raw: bool = False, **fields: Any
    ) -> Any:
        """Send ``session.update`` with ``fields`` and wait for the ``session.updated``
        that answers it; return its ``session`` (an ``openai.types.realtime.
        RealtimeSessionCreateRequest``; the dict with ``raw=True``). A refusal raises
        the server's :class:`ServerError` (matched by ``event_id``); no answer within
        ``timeout`` raises :class:`WaitTimeoutError`.

        Fields replace the session's (``audio.input``/``audio.output`` merge field by
        field): passing ``tools`` replaces the tools the client declared at connect.
        With ``client_turns=True`` a ``turn_detection`` given here still starts no
        response. The API does not say which ``session.update`` a ``session.updated``
        answers: each one answers the oldest waiting call, so on a sideband an update
        the browser sent at the same moment may answer this call early.
        """
        return self._update_session(fields, timeout, raw, "update_session()")

    def _update_session(
        self, fields: Mapping[str, Any], timeout: float | None, raw: bool, what: str
    ) -> Any:
        if self._client_turns:
            fields = ev.keep_client_turns(fields)
        answer = self._ask_server(ev.session_update(fields), None, timeout, what)
        if raw:
            return answer.get("session")
        session = self._catalog.model(answer).session
        if getattr(session, "type", None) != "realtime":
            raise EventValidationError(
                f"the session.updated answering {what} holds no realtime session",
                event=answer,
            )
        return session

    @overload
    def set_input_transcription(
        self,
        model: str | None,
        *,
        language: str | None = ...,
        prompt: str | None = ...,
        timeout: float | None = ...,
        raw: Literal[False] = False,
    ) -> Session: ...
    @overload
    def set_input_transcription(
        self,
        model: str | None,
        *,
        language: str | None = ...,
        prompt: str | None = ...,
        timeout: float | None = ...,
        raw: Literal[True],
    ) -> dict[str, Any]: ...
    def set_input_transcription(
        self,
        model: str | None,
        *,
        language: str | None = None,
        prompt: str | None = None,
        timeout: float | None = 10.0,
        raw: bool = False,
    ) -> Any:
        """Transcribe the user's audio with ``model`` (``"gpt-4o-transcribe"``,
        ``"whisper-1"``...; ``None`` turns it off): ``update_session(audio={"input":
        {"transcription": {...}}})``. The transcripts arrive as
        ``conversation.item.input_audio_transcription.delta``/``.completed`` events
        (``.failed`` if one fails) for ``on()`` and ``events()``."""
        transcription: dict[str, Any] | None = None
        if model is not None:
            transcription = {"model": model}
            if language is not None:
                transcription["language"] = language
            if prompt is not None:
                transcription["prompt"] = prompt
        fields = {"audio": {"input": {"transcription": transcription}}}
        return self._update_session(fields, timeout, raw, "set_input_transcription()")

    @overload
    def get_item(
        self, item_id: str, *, timeout: float | None = ..., raw: Literal[False] = False
    ) -> ConversationItem: ...
    @overload
    def get_item(
        self, item_id: str, *, timeout: float | None = ..., raw: Literal[True]
    ) -> dict[str, Any]: ...
    def get_item(self, item_id: str, *, timeout: float | None = 10.0, raw: bool = False) -> Any:
        """The server's copy of a conversation item (``conversation.item.retrieve``,
        answered by ``conversation.item.retrieved``): the ``openai`` model, or the dict
        with ``raw=True``. An unknown item raises the server's :class:`ServerError`."""
        event = ev.with_event_id({"type": "conversation.item.retrieve", "item_id": item_id})
        answer = self._ask_server(event, item_id, timeout, f"get_item({item_id!r})")
        return answer.get("item") if raw else self._catalog.model(answer).item

    def delete_item(self, item_id: str, *, timeout: float | None = 10.0) -> None:
        """Delete a conversation item and wait for ``conversation.item.deleted``; an
        unknown item raises the server's :class:`ServerError`."""
        event = ev.with_event_id({"type": "conversation.item.delete", "item_id": item_id})
        self._ask_server(event, item_id, timeout, f"delete_item({item_id!r})")

    def truncate_item(
        self,
        item_id: str,
        content_index: int,
        audio_end_ms: int,
        *,
        timeout: float | None = 10.0,
    ) -> None:
        """Cut an assistant item's audio at ``audio_end_ms`` (and drop its unheard
        transcript) and wait for ``conversation.item.truncated``; a refusal (unknown
        item, not audio, beyond its end) raises the server's :class:`ServerError`."""
        event = ev.with_event_id(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        )
        self._ask_server(event, item_id, timeout, f"truncate_item({item_id!r})")

    def _ask_server(
        self, event: dict[str, Any], item_id: str | None, timeout: float | None, what: str
    ) -> dict[str, Any]:
        """Send a client event and wait for the server event that answers it, or the
        error naming its ``event_id``.

        Answers are matched by item id (``None``: ``session.updated``), each to the
        oldest call waiting for that answer: two calls about one item at once get
        their answers in the order they were sent, as the server handles a
        connection's events in order. A call that timed out is forgotten: an answer
        that comes after it goes to the next call waiting for the same answer, if any
        (the API carries no id that could tell them apart).
        """
        self._may_block(what, True)
        answer = ANSWERED_BY[event["type"]]
        self._core.expect_answer(event, item_id)
        try:
            result: dict[str, Any] = self._send_awaited(
                event, ("request", event["event_id"]), timeout, f"the {answer} answering {what}"
            )
        except BaseException:
            self._core.forget_answer(event["event_id"])
            raise
        return result
