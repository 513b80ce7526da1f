"""A Realtime API and GPT-Live emulator: a real WebRTC (and WebSocket) server on loopback.

It behaves like the OpenAI Realtime API as its public reference describes it - above all it
rejects a second default-conversation ``response.create`` with the exact
``conversation_already_has_active_response`` error - and it is the referee of
rtclient's tests, so it imports nothing of the client (only the loopback helper).

Three ways to use it::

    from rtclient.emulator import Emulator
    with Emulator(pace=0.02) as emu:              # own thread + event loop
        OpenAI(base_url=emu.url, api_key="sk-test").realtime.connect(model="gpt-realtime")

    python -m rtclient.emulator --port 8765        # from a shell

The same server speaks GPT-Live (``/v1/live/sessions``, sidebands, WebRTC creation,
delegation): how to drive it from a test - endpoints, control routes, the scripted
model's delegation script, the knobs - is ``rtclient.emulator.live``'s docstring.

Modules: ``emulator`` (the thread and loop), ``registry`` (the state the routes act
on), ``server`` (Realtime signaling and control routes), ``routing`` (what the route
modules share), ``websocket`` (a socket as a session channel), ``peer`` (aiortc),
``session`` (the Realtime API's rules), ``response`` (one response's event stream),
``conversation`` (items), ``model`` (the scripted model and its syntax), ``audio``
(the speaking track), ``faults`` (fault injection), ``validation`` (strict client event
schema), ``records`` (waiting on recorded state), ``auth`` (keys), ``live`` (GPT-Live).
"""

from .emulator import Emulator
from .faults import Faults
from .live import LiveRules, LiveSession
from .model import Model, ModelRequest, Output, Pace, ScriptedModel, TextReply, ToolCall
from .session import Session

__all__ = [
    "Emulator",
    "Faults",
    "LiveRules",
    "LiveSession",
    "Model",
    "ModelRequest",
    "Output",
    "Pace",
    "ScriptedModel",
    "Session",
    "TextReply",
    "ToolCall",
]
