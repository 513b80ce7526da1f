"""``POST /ask`` {"question": ...}: answered through the shared client, in the request thread.

A Django worker thread blocks in ``ask()`` while the tool runs on a pool thread; many
workers may ask at once - the client's gate keeps their responses from colliding.
Errors are JSON with a status code, like the answers.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from rtclient import RealtimeError

from . import realtime


def ask(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return _error(405, "use POST")
    try:
        body: Any = json.loads(request.body or b"null")
    except ValueError:
        body = None
    question = body.get("question") if isinstance(body, dict) else None
    if not isinstance(question, str) or not question.strip():
        return _error(400, 'send JSON {"question": "..."}')
    timeout = settings.RTCLIENT.get("ask_timeout", 60.0)
    try:
        answer = realtime.get_client().ask(question, timeout=timeout)
    except TimeoutError:
        return _error(504, f"no answer within {timeout}s")
    except RealtimeError as exc:
        return _error(502, f"the Realtime API failed: {type(exc).__name__}")
    return JsonResponse(
        {
            "text": answer.text,
            "response_ids": answer.response_ids,
            "tool_calls": [
                {"name": c.name, "arguments": c.arguments, "output": c.output, "error": c.error}
                for c in answer.tool_calls
            ],
        }
    )


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "status": status}}, status=status)
