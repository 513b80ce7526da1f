"""The exception types rtclient raises.

One hierarchy under :class:`RealtimeError` so callers can catch everything from the SDK
with one clause, and narrower types for what they can act on (retry a send, reconnect
after a close, show a signaling error to a user). No message ever carries an API key:
exceptions are built from server payloads and our own state, never from headers. No
message grows with what a server or a model sent either: :class:`RealtimeError` bounds
its text (``rtclient._bounded``), whichever subclass builds it.

:class:`ToolErrorWarning` is the one warning category: a tool of yours raised.
"""

from __future__ import annotations

from typing import Any

from rtclient._bounded import TEXT, clip


class RealtimeError(Exception):
    """Base class of every rtclient error. Its message is bounded (about a thousand
    characters, then how many were cut): a server's megabyte of error text stays in
    the attributes that hold data, never in ``str(error)``."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(clip(a, TEXT) if isinstance(a, str) else a for a in args))


class ServerError(RealtimeError):
    """An ``error`` event from the server, with the API's fields."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(f"{clip(code or type or 'error')}: {message}")
        self.message = clip(message, TEXT)
        self.code = code
        self.type = type
        self.param = param
        self.event_id = event_id

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> ServerError:
        err = event.get("error") or {}
        if not isinstance(err, dict):
            err = {"message": str(err)}
        code = _text(err.get("code"))
        kind: type[ServerError] = SessionExpiredError if code == "session_expired" else cls
        return kind(
            str(err.get("message") or "server error"),
            code=code,
            type=_text(err.get("type")),
            param=_text(err.get("param")),
            event_id=_text(err.get("event_id")),
        )


def _text(value: Any) -> str | None:
    """A field the API sends as a string (or null); anything else is treated as absent."""
    return value if isinstance(value, str) else None


class ResponseRejectedError(ServerError):
    """``conversation_already_has_active_response`` more often than the retry bound allows."""


class SessionExpiredError(ServerError):
    """The server ended the session (``session_expired``); the client is closed."""


class ClosedError(RealtimeError):
    """The client, its connection or its loop is closed; the operation cannot complete."""


class ConnectionLostError(ClosedError):
    """The data channel or peer connection closed while work was in flight."""


class SessionReplacedError(ConnectionLostError):
    """The connection was lost and the client (``reconnect=``) is moving to a new one:
    what waited on the old connection - a ticket, an ``ask()``, an answer, a tool
    round's follow-up - ends with this. Nothing of it is replayed on the new
    connection; the client itself stays usable once ``rtclient.reconnected`` arrives."""


class ReconnectingError(ConnectionLostError):
    """A call made while the client re-establishes a lost connection (between
    ``rtclient.reconnecting`` and ``rtclient.reconnected``): nothing was sent; try
    again once reconnected."""


class ReconnectFailedError(ConnectionLostError):
    """Every reconnect attempt failed (or one failed for good: the call ended, the key
    was refused); the client is closed. ``attempts`` says how many were made."""

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts


class SessionClosedError(ClosedError):
    """A GPT-Live session ended (``session.closed``); ``reason`` is the server's
    (``close_requested``, ``expired``, ``content``, ``remote_hangup``,
    ``connection_lost``)."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class CommandRefusedError(RealtimeError, ValueError):
    """A command this connection may not send, refused before anything went out: a
    ``session.start`` on a sideband or a WebRTC session (the session is already
    started), input audio on a sideband, a type GPT-Live does not define, a
    ``delegation_id`` under Responses delegation."""


class UnknownDelegationError(RealtimeError, LookupError):
    """A GPT-Live delegation id this session never announced (or one of another session:
    ids belong to the session that made them); nothing was sent."""


class ContentTooLongError(RealtimeError, ValueError):
    """A GPT-Live append would need more parts than allowed (each part carries at most
    500 tokens); nothing of it was sent."""

    def __init__(self, message: str, *, tokens: int, max_tokens: int) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.max_tokens = max_tokens


class BridgeClosedError(ClosedError):
    """A command was put on the bridge after (or while) it shut down."""


class BridgeFullError(RealtimeError):
    """The bridge's bounded queue is full: the loop is not keeping up. Nothing was queued."""


class SendError(RealtimeError):
    """An event could not be sent on the data channel."""


class MessageTooLargeError(SendError):
    """An event is larger than the connection accepts in one message; it was not sent."""

    def __init__(self, message: str, *, size: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class SendRefusedError(RealtimeError):
    """The client's ``send_guard`` refused an event: it was not written. The guard's own
    exception is the cause (``__cause__``). A refused ``response.create`` is not retried."""


class WaitTimeoutError(RealtimeError, TimeoutError):
    """A blocking call waited its whole ``timeout``; the message says what for.

    Both a :class:`RealtimeError` (catch everything from the SDK) and the builtin
    ``TimeoutError`` (catch every timeout), so either clause works.
    """


class ConfirmTimeoutError(RealtimeError):
    """A ``response.create`` was never confirmed or rejected within the retry bound."""


class LoopThreadError(RealtimeError):
    """Misuse of the background loop thread."""


class WrongThreadError(LoopThreadError):
    """A blocking call was made from the loop thread itself, which would deadlock."""


class ForkedProcessError(LoopThreadError):
    """The loop thread belongs to the parent process; a forked child cannot use it."""


class SignalingError(RealtimeError):
    """An HTTP exchange with the API failed (the SDP offer, a WebSocket handshake, a
    hang-up); carries the API's HTTP status, ``code`` and ``message``.

    The refusals come as the subclasses the ``openai`` package's users know, by HTTP
    status (:class:`BadRequestError` 400, :class:`AuthenticationError` 401,
    :class:`PermissionDeniedError` 403, :class:`NotFoundError` 404,
    :class:`ConflictError` 409, :class:`UnprocessableEntityError` 422,
    :class:`RateLimitError` 429, :class:`InternalServerError` 5xx), and a request that
    got no HTTP answer at all as :class:`APIConnectionError`. They are rtclient's own
    classes (``rtclient.transports.signaling.signaling_error`` builds them); another status is a
    plain ``SignalingError``.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(f"signaling failed ({status}, {clip(str(code))}): {message}")
        self.message = clip(message, TEXT)
        self.status = status
        self.code = code


class BadRequestError(SignalingError):
    """400: the request was malformed (e.g. an SDP offer the API cannot parse)."""


class AuthenticationError(SignalingError):
    """401: the API key is missing, wrong, revoked, or an expired ephemeral key."""


class PermissionDeniedError(SignalingError):
    """403: the key is valid but may not do this (project, model or region access)."""


class NotFoundError(SignalingError):
    """404: the resource (a call, a model, an endpoint) does not exist."""


class CallNotFoundError(NotFoundError):
    """The call does not exist or has ended (the API's ``call_id_not_found``): attaching
    a sideband to it or hanging it up is refused."""


class ConflictError(SignalingError):
    """409: the request conflicts with the resource's current state."""


class UnprocessableEntityError(SignalingError):
    """422: the request was well-formed but its content was refused."""


class RateLimitError(SignalingError):
    """429: too many requests, or the account's quota is exhausted (``code`` says which:
    e.g. ``rate_limit_exceeded``, ``insufficient_quota``)."""


class InternalServerError(SignalingError):
    """5xx: the API failed or is overloaded; retrying later may succeed."""


class APIConnectionError(SignalingError):
    """No HTTP answer at all: connection refused or reset, DNS failure, TLS failure.
    ``status`` is None and ``code`` is ``"connection_error"``."""


class ConnectTimeoutError(WaitTimeoutError):
    """The connection was not ready within the connect timeout (e.g. no ICE candidate)."""


class APITimeoutError(APIConnectionError, WaitTimeoutError):
    """An HTTP exchange with the API was not answered in time (aiohttp's own timeouts,
    or a hang-up's bound): an :class:`APIConnectionError` and a
    :class:`WaitTimeoutError` (so also a ``TimeoutError``); ``code`` is ``"timeout"``."""


class EventValidationError(RealtimeError, ValueError):
    """A server event that its ``openai.types.realtime`` model does not accept, where a
    typed value was asked for (``ticket.response()``, ``Answer.response``,
    ``update_session()``...). ``event`` is the raw dict; the pydantic error is the cause.
    """

    def __init__(self, message: str, *, event: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.event = event


class ToolError(RealtimeError):
    """A tool could not run: unknown name, bad arguments, an exception or a timeout."""


class InvalidAPIKeyError(RealtimeError, ValueError):
    """The API key cannot be one: it holds a control character, a space or a character
    outside ASCII (two lines of a file, a binary file, a key pasted with a typographic
    character). Raised where the key is given (``RealtimeClient(...)``,
    ``create_call``, ``hangup_call``), before anything is sent; the message says what
    and where, never the key. Also a ``ValueError``: it is a bad argument."""


class ToolErrorWarning(UserWarning):
    """A tool raised: the model received an error output instead of its result.

    Shown by Python's warning machinery, so it is visible by default and filterable
    like any warning (``warnings.filterwarnings("ignore", category=ToolErrorWarning)``,
    or by the tool's ``module``; ``"always"`` shows every failure, ``"error"`` raises
    it in the thread that finished the call). The default filter shows it once per
    tool. ``tool``, ``call_id`` and ``error`` say which call and what it raised.
    """

    def __init__(self, message: str, *, tool: str = "", call_id: str = "", error: str = "") -> None:
        super().__init__(message)
        self.tool = tool
        self.call_id = call_id
        self.error = error


class WebhookVerificationError(RealtimeError):
    """A webhook that must not be trusted: answer it ``400`` and act on nothing in it.

    Raised by :func:`rtclient.sip.verify_webhook` before the body is parsed; the two
    subclasses say why. No message carries the secret or the body."""


class WebhookSignatureError(WebhookVerificationError):
    """No ``webhook-signature`` entry matches the body signed with the secret (a forged
    or altered message, the wrong secret), or a ``webhook-*`` header is missing."""


class WebhookTimestampError(WebhookVerificationError):
    """``webhook-timestamp`` is further from now than the tolerance (300 s), either way,
    or not a number: a replayed (stale) or post-dated delivery."""
