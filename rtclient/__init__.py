"""rtclient: a thread-based, synchronous SDK for the OpenAI Realtime API (WebRTC, WebSocket).

Its core promise: ``conversation_already_has_active_response`` cannot happen by
construction (see :mod:`rtclient.core.gate`), and no request for a response is ever lost.

Like every library that uses loguru, rtclient adds no log handler and is disabled until
the application opts in with ``logger.enable("rtclient")``.
"""

from loguru import logger

from rtclient.calls import CallAnswer, create_call, hangup_call
from rtclient.client import Answer, EventStream, RealtimeClient, ResponseTicket
from rtclient.core.gate import ResponseGate, Ticket, Trigger
from rtclient.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BridgeClosedError,
    BridgeFullError,
    CallNotFoundError,
    ClosedError,
    ConfirmTimeoutError,
    ConflictError,
    ConnectionLostError,
    ConnectTimeoutError,
    EventValidationError,
    ForkedProcessError,
    InternalServerError,
    LoopThreadError,
    MessageTooLargeError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RealtimeError,
    ResponseRejectedError,
    SendError,
    SendRefusedError,
    ServerError,
    SessionExpiredError,
    SignalingError,
    ToolError,
    UnprocessableEntityError,
    WaitTimeoutError,
    WrongThreadError,
)
from rtclient.runtime.loop import LoopThread
from rtclient.tools import ToolCall, ToolSpec, tool

logger.disable("rtclient")

__version__ = "0.1.0.dev0"

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "Answer",
    "AuthenticationError",
    "BadRequestError",
    "BridgeClosedError",
    "BridgeFullError",
    "CallAnswer",
    "CallNotFoundError",
    "ClosedError",
    "ConfirmTimeoutError",
    "ConflictError",
    "ConnectTimeoutError",
    "ConnectionLostError",
    "EventStream",
    "EventValidationError",
    "ForkedProcessError",
    "InternalServerError",
    "LoopThread",
    "LoopThreadError",
    "MessageTooLargeError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RealtimeClient",
    "RealtimeError",
    "ResponseGate",
    "ResponseRejectedError",
    "ResponseTicket",
    "SendError",
    "SendRefusedError",
    "ServerError",
    "SessionExpiredError",
    "SignalingError",
    "Ticket",
    "ToolCall",
    "ToolError",
    "ToolSpec",
    "Trigger",
    "UnprocessableEntityError",
    "WaitTimeoutError",
    "WrongThreadError",
    "__version__",
    "create_call",
    "hangup_call",
    "tool",
]
