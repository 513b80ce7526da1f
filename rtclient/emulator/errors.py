"""The API's error shapes: an HTTP error body for signaling, an ``error`` event in-session.

Both carry ``{"message", "type", "param", "code"}``. Signaling errors are raised as
:class:`ApiError` and rendered by the server's middleware, so no handler ever leaks a
stack trace; session errors are raised as :class:`ClientEventError` by the rules and
turned into an ``error`` event echoing the client's ``event_id``.
"""

from __future__ import annotations

from typing import Any

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class ApiError(Exception):
    """A signaling (HTTP) failure: status code plus the API's JSON error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str = INVALID_REQUEST,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class ClientEventError(Exception):
    """A client event the session refuses; becomes one ``error`` server event."""

    def __init__(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        type: str = INVALID_REQUEST,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.type = type

    def payload(self, client_event_id: str | None) -> dict[str, Any]:
        """The ``error`` object of an error event (its ``event_id`` is the client's)."""
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": client_event_id,
        }


def active_response_error(active_response_id: str) -> ClientEventError:
    """The API's error, verbatim: the error this whole project exists for."""
    return ClientEventError(
        "conversation_already_has_active_response",
        f"Conversation already has an active response in progress: {active_response_id}. "
        "Wait until the response is finished before creating a new one.",
    )


def cancel_not_active_error() -> ClientEventError:
    return ClientEventError(
        "response_cancel_not_active", "Cancellation failed: no active response found"
    )
