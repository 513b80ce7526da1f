"""The page, and the two JSON endpoints it calls. Errors are JSON with a status code.

``GET /`` the voice page (``voice.html``, shared with the Flask example);
``POST /calls`` (the browser's SDP offer, ``application/sdp``) -> ``{call_id, sdp}``;
``POST /calls/<call_id>/hangup`` -> ``{call_id, ended}``. No response carries a key.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from rtclient import RealtimeError

from . import realtime

log = logging.getLogger(__name__)


def page(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return _error(405, "use GET")
    return HttpResponse(settings.VOICE_PAGE.read_text(encoding="utf-8"))


def start_call(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return _error(405, "use POST")
    offer = request.body.decode("utf-8", "replace")
    if request.content_type != "application/sdp" or not offer.startswith("v=0"):
        return _error(400, "post the browser's SDP offer as application/sdp")
    if not settings.RTCLIENT.get("api_key"):
        return _error(503, "the server has no API key configured")
    try:
        call_id, answer = realtime.start_call(offer)
    except RealtimeError as exc:
        log.warning("call not started: %s", exc)  # rtclient's errors never carry the key
        return _error(502, f"the Realtime API failed: {type(exc).__name__}")
    return JsonResponse({"call_id": call_id, "sdp": answer}, status=201)


def hangup(request: HttpRequest, call_id: str) -> JsonResponse:
    if request.method != "POST":
        return _error(405, "use POST")
    if not realtime.hangup(call_id):
        return _error(404, f"no live call {call_id}")
    return JsonResponse({"call_id": call_id, "ended": True})


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "status": status}}, status=status)
