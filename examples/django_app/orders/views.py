"""The page, and the two JSON endpoints it calls. Errors are JSON with a status code.

``GET /`` the voice page (``voice.html``, shared with the Flask example) and
``GET /call_page.js`` its script;
``POST /calls`` (the browser's SDP offer, ``application/sdp``) -> ``{call_id, sdp}``;
``POST /calls/<call_id>/hangup`` -> ``{call_id, ended}``;
``POST /webhooks/openai`` -> a phone call rings (``orders.realtime.phone_line``):
verified, then answered, rejected or known already. No response carries a key.

A call belongs to the browser session that created it: ``POST /calls`` keeps a random
*caller* id in the Django session (the session framework: the cookie holds only a
random session key) and the registry stores it with the call; every per-call route
answers 403 to another session and 404 for a call that is not live. A session may
hold ``RTCLIENT["max_calls_per_session"]`` live calls (``RT_MAX_CALLS_PER_SESSION``,
default 2); more is 429. Django's CSRF protection covers both POSTs: the page reads
the ``csrftoken`` cookie (set with the page) and sends it as ``X-CSRFToken``; a request
without it is refused with a JSON 403 (``csrf_failure``).
"""

from __future__ import annotations

import logging
import secrets

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie

from rtclient import RealtimeError
from rtclient.logs import short_id

from . import realtime

log = logging.getLogger(__name__)

CALLER = "rt_caller"
"""The session key holding this browser's caller id (random; the calls it created)."""


@ensure_csrf_cookie  # the token the page sends back with its POSTs
def page(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return _error(405, "use GET")
    return HttpResponse(settings.VOICE_PAGE.read_text(encoding="utf-8"))


def page_script(request: HttpRequest) -> HttpResponse:
    """``call_page.js``: what the voice pages share (next to ``voice.html``)."""
    if request.method != "GET":
        return _error(405, "use GET")
    script = settings.VOICE_PAGE.with_name("call_page.js").read_text(encoding="utf-8")
    return HttpResponse(script, content_type="text/javascript; charset=utf-8")


def start_call(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return _error(405, "use POST")
    offer = request.body.decode("utf-8", "replace")
    if request.content_type != "application/sdp" or not offer.startswith("v=0"):
        return _error(400, "post the browser's SDP offer as application/sdp")
    if not settings.RTCLIENT.get("api_key"):
        return _error(503, "the server has no API key configured")
    caller = request.session.setdefault(CALLER, secrets.token_urlsafe(16))
    try:
        started = realtime.start_call(offer, caller)
    except RealtimeError as exc:
        log.warning("call not started: %s", exc)  # rtclient's errors never carry the key
        return _error(502, f"the Realtime API failed: {type(exc).__name__}")
    if started is None:
        limit = realtime.max_calls_per_session()
        return _error(429, f"this browser already has {limit} live calls: end one first")
    call_id, answer = started
    return JsonResponse({"call_id": call_id, "sdp": answer}, status=201)


def hangup(request: HttpRequest, call_id: str) -> JsonResponse:
    if request.method != "POST":
        return _error(405, "use POST")
    if (refusal := _refused(request, call_id)) is not None:
        return refusal
    if not realtime.hangup(call_id):
        return _error(404, f"no live call {call_id}")  # it ended a moment ago
    return JsonResponse({"call_id": call_id, "ended": True})


@csrf_exempt  # OpenAI posts it, with no cookie: its signature is its proof (verified)
def openai_webhook(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return _error(405, "use POST")
    status, body = realtime.phone_line().handle(request.body, request.headers)
    return JsonResponse(body, status=status)


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    """Django's CSRF refusal, as JSON like every other error (``CSRF_FAILURE_VIEW``)."""
    return _error(403, f"CSRF check failed ({reason}): send the csrftoken cookie as X-CSRFToken")


def _refused(request: HttpRequest, call_id: str) -> JsonResponse | None:
    """The error for a per-call route, or None if ``call_id`` is live and this browser
    session created it."""
    caller, mine = realtime.caller_of(call_id), request.session.get(CALLER)
    if caller is None:
        return _error(404, f"no live call {call_id}")
    if not mine or not secrets.compare_digest(caller, mine):
        log.warning("refused another session's request for call %s", short_id(call_id))
        return _error(403, "this call belongs to another browser session")
    return None


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "status": status}}, status=status)
