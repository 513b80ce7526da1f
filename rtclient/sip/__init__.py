"""Phone calls (SIP), for the Realtime API and GPT-Live.

A call to the project's OpenAI SIP address is announced by a signed webhook; the app
verifies it, decides, and accepts (with its session config), rejects or later
transfers the call over HTTP, then drives it through a sideband. The pieces:

* :func:`verify_webhook` -> :class:`IncomingCall` (``webhooks``): the ``openai``
  package's verifier, typed refusals for a stale or forged delivery;
* :func:`accept_call`, :func:`reject_call`, :func:`refer_call`, :func:`hangup_call`
  (``control``): each API's routes and body shapes, checked before sending;
* :func:`answer_call` (``answer``): accept and attach a ``RealtimeClient`` sideband
  with the app's tools in one call; :class:`Dtmf` and :func:`watch_dtmf` for the
  caller's keypresses;
* :class:`OnceOnly` (``once``): a delivery that arrives twice is acted on once.

A webhook route, in full (Flask; the examples' ``/webhooks/openai`` do the same)::

    once = rtclient.OnceOnly()

    @app.post("/webhooks/openai")
    def openai_webhook():
        try:
            call = rtclient.verify_webhook(request.get_data(), request.headers)
        except rtclient.WebhookVerificationError:
            return "", 400                         # forged or stale: nothing happens
        if call is None or not once.first(*call.dedupe_keys()):
            return "", 200                         # another event, or a repeat
        client = rtclient.answer_call(call, session=SESSION, tools=TOOLS, executor=pool)
        return "", 200
"""

from .answer import DTMF_EVENTS, Dtmf, answer_call, watch_dtmf
from .control import DECLINE, accept_body, accept_call, hangup_call, refer_call, reject_call
from .once import Once, OnceOnly
from .webhooks import CALL_EVENTS, Api, IncomingCall, SipHeader, verify_webhook

__all__ = [
    "CALL_EVENTS",
    "DECLINE",
    "DTMF_EVENTS",
    "Api",
    "Dtmf",
    "IncomingCall",
    "Once",
    "OnceOnly",
    "SipHeader",
    "accept_body",
    "accept_call",
    "answer_call",
    "hangup_call",
    "refer_call",
    "reject_call",
    "verify_webhook",
    "watch_dtmf",
]
