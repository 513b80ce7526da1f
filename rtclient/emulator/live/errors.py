"""GPT-Live's ``error`` event, and the refusals whose wording the emulator chose.

A Live error echoes the command's ``event_id`` as ``client_event_id`` - inside the
error (``error.client_event_id``) and at the top level of the event - where Realtime
uses ``error.event_id``. The codes the public reference names are used as named
(``unknown_parameter``, ``invalid_request_error`` events the delegation mode forbids,
``context_injection_incomplete``, ``model_not_found``); where it names none, the code
is the emulator's choice and says so here:

==================================  =====================================================
code                                when
==================================  =====================================================
``session_not_started``             a command before ``session.start`` (primary WebSocket)
``session_already_started``         a second ``session.start``, or one on WebRTC
``not_allowed_on_sideband``         ``session.start``/``session.input_audio.append`` on a
                                    sideband
``not_allowed_on_transport``        ``session.input_audio.append`` on WebRTC (audio goes
                                    on the media track)
``delegation_not_found``            an append for an id this session never created
``delegation_not_active``           an append for a finished delegation
``string_above_max_length``         an append over the token limit
``conversation_already_has_active_  ``response.create`` while a backend response runs
response``                          (the Realtime API's code and wording)
``tool_outputs_incomplete``         ``response.create`` while a call lacks its output
``emulator_unsupported``            a valid feature the emulator does not play
                                    (Decisions, triggers, wake policy, audio fixtures)
==================================  =====================================================
"""

from __future__ import annotations

from typing import Any

from ..errors import ClientEventError


def error_event(exc: ClientEventError, client_event_id: str | None) -> dict[str, Any]:
    """The ``error`` server event (without ``event_id``) for a refused command."""
    error: dict[str, Any] = {
        "type": exc.type,
        "code": exc.code or "invalid_request_error",
        "message": exc.message,
        "param": exc.param,
    }
    event: dict[str, Any] = {"type": "error", "error": error}
    if client_event_id is not None:
        error["client_event_id"] = client_event_id
        event["client_event_id"] = client_event_id
    return event


def refused(code: str, message: str, param: str | None = None) -> ClientEventError:
    return ClientEventError(code, message, param=param)


def requires_responses(event_type: str) -> ClientEventError:
    """The API's wording for a Responses-only command under client delegation."""
    return ClientEventError("invalid_request_error", f"{event_type} requires Responses delegation.")


def unsupported(what: str, param: str | None = None) -> ClientEventError:
    return ClientEventError(
        "emulator_unsupported",
        f"{what} is valid for the API but not emulated by rtclient's emulator.",
        param=param,
    )
