"""rtclient: a thread-based, synchronous SDK for the OpenAI Realtime API
(:class:`RealtimeClient`) and GPT-Live (:class:`LiveClient`), phone calls included
(:mod:`rtclient.sip`).

Its core promise: ``conversation_already_has_active_response`` cannot happen by
construction (see :mod:`rtclient.core.gate`), and no request for a response is ever lost.

Like every library that uses loguru, rtclient adds no log handler and is disabled until
the application opts in with ``logger.enable("rtclient")``.

The public names below are imported on first use (PEP 562), not with the package:
``import rtclient`` costs loguru alone, so ``rtclient --help``, ``rtclient.emulator``
(which imports nothing of the client) and the pytest plugin start fast, and the
command line installs its Ctrl-C handler before aiortc and the openai types load.
``from rtclient import RealtimeClient`` works as before, and type checkers read the
imports under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from loguru import logger

logger.disable("rtclient")

__version__ = "0.1.0.dev0"

if TYPE_CHECKING:
    from rtclient.calls import CallAnswer as CallAnswer
    from rtclient.calls import LiveSessionAnswer as LiveSessionAnswer
    from rtclient.calls import create_call as create_call
    from rtclient.calls import create_live_session as create_live_session
    from rtclient.calls import hangup_call as hangup_call
    from rtclient.client import Answer as Answer
    from rtclient.client import EventStream as EventStream
    from rtclient.client import RealtimeClient as RealtimeClient
    from rtclient.client import ResponseTicket as ResponseTicket
    from rtclient.core.gate import ResponseGate as ResponseGate
    from rtclient.core.gate import Ticket as Ticket
    from rtclient.core.gate import Trigger as Trigger
    from rtclient.core.live_protocol import DelegationTask as DelegationTask
    from rtclient.core.live_protocol import Notices as Notices
    from rtclient.core.restore import Reconnect as Reconnect
    from rtclient.core.restore import Reconnected as Reconnected
    from rtclient.core.restore import Reconnecting as Reconnecting
    from rtclient.errors import APIConnectionError as APIConnectionError
    from rtclient.errors import APITimeoutError as APITimeoutError
    from rtclient.errors import AuthenticationError as AuthenticationError
    from rtclient.errors import BadRequestError as BadRequestError
    from rtclient.errors import BridgeClosedError as BridgeClosedError
    from rtclient.errors import BridgeFullError as BridgeFullError
    from rtclient.errors import CallNotFoundError as CallNotFoundError
    from rtclient.errors import ClosedError as ClosedError
    from rtclient.errors import CommandRefusedError as CommandRefusedError
    from rtclient.errors import ConfirmTimeoutError as ConfirmTimeoutError
    from rtclient.errors import ConflictError as ConflictError
    from rtclient.errors import ConnectionLostError as ConnectionLostError
    from rtclient.errors import ConnectTimeoutError as ConnectTimeoutError
    from rtclient.errors import ContentTooLongError as ContentTooLongError
    from rtclient.errors import EventValidationError as EventValidationError
    from rtclient.errors import ForkedProcessError as ForkedProcessError
    from rtclient.errors import InternalServerError as InternalServerError
    from rtclient.errors import InvalidAPIKeyError as InvalidAPIKeyError
    from rtclient.errors import LoopThreadError as LoopThreadError
    from rtclient.errors import MessageTooLargeError as MessageTooLargeError
    from rtclient.errors import NotFoundError as NotFoundError
    from rtclient.errors import PermissionDeniedError as PermissionDeniedError
    from rtclient.errors import RateLimitError as RateLimitError
    from rtclient.errors import RealtimeError as RealtimeError
    from rtclient.errors import ReconnectFailedError as ReconnectFailedError
    from rtclient.errors import ReconnectingError as ReconnectingError
    from rtclient.errors import ResponseRejectedError as ResponseRejectedError
    from rtclient.errors import SendError as SendError
    from rtclient.errors import SendRefusedError as SendRefusedError
    from rtclient.errors import ServerError as ServerError
    from rtclient.errors import SessionClosedError as SessionClosedError
    from rtclient.errors import SessionExpiredError as SessionExpiredError
    from rtclient.errors import SessionReplacedError as SessionReplacedError
    from rtclient.errors import SignalingError as SignalingError
    from rtclient.errors import ToolError as ToolError
    from rtclient.errors import ToolErrorWarning as ToolErrorWarning
    from rtclient.errors import UnknownDelegationError as UnknownDelegationError
    from rtclient.errors import UnprocessableEntityError as UnprocessableEntityError
    from rtclient.errors import WaitTimeoutError as WaitTimeoutError
    from rtclient.errors import WebhookSignatureError as WebhookSignatureError
    from rtclient.errors import WebhookTimestampError as WebhookTimestampError
    from rtclient.errors import WebhookVerificationError as WebhookVerificationError
    from rtclient.errors import WrongThreadError as WrongThreadError
    from rtclient.live import LiveClient as LiveClient
    from rtclient.live import Placement as Placement
    from rtclient.runtime.loop import LoopThread as LoopThread
    from rtclient.sip import Dtmf as Dtmf
    from rtclient.sip import IncomingCall as IncomingCall
    from rtclient.sip import OnceOnly as OnceOnly
    from rtclient.sip import accept_call as accept_call
    from rtclient.sip import answer_call as answer_call
    from rtclient.sip import refer_call as refer_call
    from rtclient.sip import reject_call as reject_call
    from rtclient.sip import verify_webhook as verify_webhook
    from rtclient.tools import ToolCall as ToolCall
    from rtclient.tools import ToolSpec as ToolSpec
    from rtclient.tools import tool as tool

# public name -> the module that defines it
_EXPORTS = {
    "APIConnectionError": "rtclient.errors",
    "APITimeoutError": "rtclient.errors",
    "Answer": "rtclient.client",
    "AuthenticationError": "rtclient.errors",
    "BadRequestError": "rtclient.errors",
    "BridgeClosedError": "rtclient.errors",
    "BridgeFullError": "rtclient.errors",
    "CallAnswer": "rtclient.calls",
    "CallNotFoundError": "rtclient.errors",
    "ClosedError": "rtclient.errors",
    "CommandRefusedError": "rtclient.errors",
    "ConfirmTimeoutError": "rtclient.errors",
    "ConflictError": "rtclient.errors",
    "ConnectTimeoutError": "rtclient.errors",
    "ConnectionLostError": "rtclient.errors",
    "ContentTooLongError": "rtclient.errors",
    "DelegationTask": "rtclient.core.live_protocol",
    "Dtmf": "rtclient.sip",
    "EventStream": "rtclient.client",
    "EventValidationError": "rtclient.errors",
    "ForkedProcessError": "rtclient.errors",
    "IncomingCall": "rtclient.sip",
    "InternalServerError": "rtclient.errors",
    "InvalidAPIKeyError": "rtclient.errors",
    "LiveClient": "rtclient.live",
    "LiveSessionAnswer": "rtclient.calls",
    "LoopThread": "rtclient.runtime.loop",
    "LoopThreadError": "rtclient.errors",
    "MessageTooLargeError": "rtclient.errors",
    "NotFoundError": "rtclient.errors",
    "Notices": "rtclient.core.live_protocol",
    "OnceOnly": "rtclient.sip",
    "PermissionDeniedError": "rtclient.errors",
    "Placement": "rtclient.live",
    "RateLimitError": "rtclient.errors",
    "RealtimeClient": "rtclient.client",
    "RealtimeError": "rtclient.errors",
    "Reconnect": "rtclient.core.restore",
    "ReconnectFailedError": "rtclient.errors",
    "Reconnected": "rtclient.core.restore",
    "Reconnecting": "rtclient.core.restore",
    "ReconnectingError": "rtclient.errors",
    "ResponseGate": "rtclient.core.gate",
    "ResponseRejectedError": "rtclient.errors",
    "ResponseTicket": "rtclient.client",
    "SendError": "rtclient.errors",
    "SendRefusedError": "rtclient.errors",
    "ServerError": "rtclient.errors",
    "SessionClosedError": "rtclient.errors",
    "SessionExpiredError": "rtclient.errors",
    "SessionReplacedError": "rtclient.errors",
    "SignalingError": "rtclient.errors",
    "Ticket": "rtclient.core.gate",
    "ToolCall": "rtclient.tools",
    "ToolError": "rtclient.errors",
    "ToolErrorWarning": "rtclient.errors",
    "ToolSpec": "rtclient.tools",
    "Trigger": "rtclient.core.gate",
    "UnknownDelegationError": "rtclient.errors",
    "UnprocessableEntityError": "rtclient.errors",
    "WaitTimeoutError": "rtclient.errors",
    "WebhookSignatureError": "rtclient.errors",
    "WebhookTimestampError": "rtclient.errors",
    "WebhookVerificationError": "rtclient.errors",
    "WrongThreadError": "rtclient.errors",
    "accept_call": "rtclient.sip",
    "answer_call": "rtclient.sip",
    "create_call": "rtclient.calls",
    "create_live_session": "rtclient.calls",
    "hangup_call": "rtclient.calls",
    "refer_call": "rtclient.sip",
    "reject_call": "rtclient.sip",
    "tool": "rtclient.tools",
    "verify_webhook": "rtclient.sip",
}


if not TYPE_CHECKING:  # a module __getattr__ would make every attribute valid to mypy

    def __getattr__(name: str) -> Any:
        """Import a public name on first use, and keep it (later lookups are plain)."""
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'rtclient' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [*sorted(_EXPORTS), "__version__"]
