"""rtclient: a thread-based, synchronous SDK for the OpenAI Realtime API (WebRTC, WebSocket).

Its core promise: ``conversation_already_has_active_response`` cannot happen by
construction (see :mod:`rtclient.gate`), and no request for a response is ever lost.

Like every library that uses loguru, rtclient adds no log handler and is disabled until
the application opts in with ``logger.enable("rtclient")``.
"""

from loguru import logger

from rtclient.calls import CallAnswer, create_call, hangup_call
from rtclient.client import Answer, EventStream, RealtimeClient, ResponseTicket
from rtclient.errors import (
    BridgeClosedError,
    BridgeFullError,
    CallNotFoundError,
    ClosedError,
    ConfirmTimeoutError,
    ConnectionLostError,
    ConnectTimeoutError,
    ForkedProcessError,
    LoopThreadError,
    MessageTooLargeError,
    RealtimeError,
    ResponseRejectedError,
    SendError,
    ServerError,
    SessionExpiredError,
    SignalingError,
    ToolError,
    WaitTimeoutError,
    WrongThreadError,
)
from rtclient.gate import ResponseGate, Ticket, Trigger
from rtclient.loop import LoopThread
from rtclient.tools import ToolCall, ToolSpec, tool

logger.disable("rtclient")

__version__ = "0.1.0.dev0"

__all__ = [
    "Answer",
    "BridgeClosedError",
    "BridgeFullError",
    "CallAnswer",
    "CallNotFoundError",
    "ClosedError",
    "ConfirmTimeoutError",
    "ConnectTimeoutError",
    "ConnectionLostError",
    "EventStream",
    "ForkedProcessError",
    "LoopThread",
    "LoopThreadError",
    "MessageTooLargeError",
    "RealtimeClient",
    "RealtimeError",
    "ResponseGate",
    "ResponseRejectedError",
    "ResponseTicket",
    "SendError",
    "ServerError",
    "SessionExpiredError",
    "SignalingError",
    "Ticket",
    "ToolCall",
    "ToolError",
    "ToolSpec",
    "Trigger",
    "WaitTimeoutError",
    "WrongThreadError",
    "__version__",
    "create_call",
    "hangup_call",
    "tool",
]
