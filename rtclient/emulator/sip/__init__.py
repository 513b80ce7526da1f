"""Phone calls (SIP) on the emulator: a call rings, a signed webhook goes to the app,
and the app answers it through the Realtime API or GPT-Live.

Driving it from a test (``emu.control_url`` = ``http://127.0.0.1:PORT/_emulator``)::

    POST /_emulator/sip/webhook {"url": "http://127.0.0.1:5000/webhooks/openai",
                                 "secret": "whsec_..."}
    POST /_emulator/sip/calls {"apis": ["realtime", "live"], "from": "+1555..."}
         -> the call's record once its webhooks were delivered: call_id (rtc_...),
            session_id (live_...), status, deliveries [{webhook_id, status, ...}]
    POST /_emulator/sip/calls/{id}/speech {"text": "lookup_order({\\"order_id\\": 7})"}
    POST /_emulator/sip/calls/{id}/dtmf {"digits": "42#"}
    POST /_emulator/sip/calls/{id}/redeliver {}        the same webhook again (a retry)
    POST /_emulator/sip/calls/{id}/hangup              the caller hangs up
    GET  /_emulator/sip/calls/{id}                     status, answered_by,
         reject_status, refer_target, dtmf, utterances, frames_sent/frames_heard

The webhook is signed as OpenAI signs it (standard-webhooks, by the
``standardwebhooks`` package); ``"signature": "forged"`` or ``"timestamp_offset":
-600`` make a delivery the app must refuse. The app then calls each API's routes as
the real ones: ``/v1/realtime/calls/{rtc_id}/accept|reject|refer|hangup`` or
``/v1/live/sessions/{live_id}/accept|reject|refer|hangup``, and attaches its sideband
(``/v1/realtime?call_id=`` or ``/v1/live/sessions/{id}/attach``). The first successful
accept answers the call; every other verb on it through the other API is a ``404``.

The caller's audio is real: an aiortc leg into the session (``phone.py``), so the
session counts the caller's frames, a GPT-Live clock runs on them, and the model's
voice comes back to the phone (``frames_heard``). In process,
``switchboard(emu).call(id)`` is the record and ``emu.wait_for(...)`` waits on it.

Modules: ``webhooks`` (build, sign, deliver), ``phone`` (the caller's media leg,
generated or file audio), ``calls`` (each call's states, the first accept wins),
``routes`` (HTTP).
"""

from .calls import SipCall, Switchboard, switchboard

__all__ = ["SipCall", "Switchboard", "switchboard"]
