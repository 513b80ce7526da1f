"""GPT-Live (``gpt-live-1``) on the emulator: the same server also speaks the Live API.

One :class:`~rtclient.emulator.Emulator` serves the Realtime API and GPT-Live side by
side (same port, same keys, same faults). The Live side is written from the public
reference and checked against the ``openai`` package's ``openai.types.live`` models:
every command is validated strictly (an unknown field anywhere is an ``error``), and
every event it sends validates against ``openai.types.live.ServerEvent``.

Driving it from a test
======================

**Endpoints** (``base = emu.url``, e.g. ``http://127.0.0.1:PORT/v1``; standard key only)::

    GET  {base}/live/sessions                     (WebSocket) primary; first message
                                                  session.start {session}
    POST {base}/live/sessions                     WebRTC: JSON {session, transport:
                                                  {type: "webrtc", sdp}} -> 200 JSON
                                                  {session: {id}, transport: {type, sdp}}
    GET  {base}/live/sessions/{id}/attach         (WebSocket) sideband; ?graceful_close=
    POST {base}/live/sessions/{id}/hangup         ends it (session.closed close_requested)

The official client works against it: ``OpenAI(base_url=emu.url, api_key=...)`` then
``.live.connect()``, ``.live.create(session=, transport=)`` and
``.live.sideband.connect(session_id=)``.

**Control routes** (``emu.control_url`` = ``http://127.0.0.1:PORT/_emulator``, no key;
``{id}`` a ``live_...`` id; see ``routes.py``)::

    GET  /_emulator/live                         totals (Registry.live_stats)
    GET  /_emulator/live/{id}                    the session's whole record
    POST /_emulator/live/{id}/speech             {"text", "duration_ms"?, "with_audio"?}
    POST /_emulator/live/{id}/audio              {"ms"}: that much input silence arrives
    POST /_emulator/live/{id}/delegate           {"task"?}: the model delegates now
    POST /_emulator/live/{id}/delegations/{d}/finish
    POST /_emulator/live/{id}/close              {"reason"?}: server-side session.closed
    POST /_emulator/live/{id}/rules              LiveRules knobs of one session
    POST /_emulator/live/rules                   ... the default for new sessions
    POST /_emulator/live/{id}/faults             Faults knobs of one session

**In process** (thread-safe; ``session = emu.wait_for_live_session()`` or
``emu.live_session("live_...")``): ``session.simulate_speech(text, duration_ms=None,
with_audio=False)``, ``session.feed_audio(ms)``, ``session.force_delegation(task)``,
``session.finish_delegation(id)``, ``session.close(reason)``; reads
``session.clock_ms``, ``.started``, ``.closed``, ``.close_reason``, ``.config``,
``.counters``, ``.delegations()``, ``.appends(delegation_id=None)``,
``.transcript(up_to_ms=None, side=None)``, ``.server_events``, ``.client_events``,
``.errors``; knobs ``session.rules``/``session.faults`` (replace whole, or
``set_rules(**)``/``set_faults(**)``); waits ``emu.wait_for(lambda: ...)``.

The session clock
=================

Timeline positions (``start_ms``, ``end_ms``, ``offset_ms``) are milliseconds of
**input audio received**: a primary WebSocket's ``session.input_audio.append`` bytes
(PCM16 24 kHz = 48 bytes/ms, 16 kHz = 32, G.711 = 8), a WebRTC call's decoded frames,
or ``feed_audio``/``/audio``. While none arrives nothing on the timeline happens: the
user's simulated words are not heard, the model does not speak, and an append is not
placed - its ``session.{kind}.appended`` ack (``start_ms`` = the clock when it arrived,
``end_ms`` = ``start_ms`` + tokens x ``append_ms_per_token``) goes out with the next
chunk of audio that reaches ``end_ms``. Closing first turns each waiting append into an
``error`` ``context_injection_incomplete`` (its ``client_event_id``) before
``session.closed``. Each chunk also produces the model's continuous output stream:
``session.output_audio.delta`` (silence, the session's format, no timestamps) on the
primary WebSocket, and with ``start_ms``/``end_ms`` (PCM16 24 kHz) on sidebands, which
also get the caller's audio reflected as a server ``session.input_audio.append``.
``session.usage.updated {usage: {seconds}}`` every 15 s of timeline.

The scripted model (``voice.py``, ``backend.py``)
=================================================

* ``simulate_speech("...")`` / ``/speech``: the user's words ride on the next
  ``duration_ms`` (default 200 ms per word) of input audio and come back as
  ``session.input_transcript.delta`` fragments (``"what"``, ``" is"`` ...: concatenate).
* At the end of the utterance the model **delegates** if the words contain
  ``delegate`` or, under Responses delegation, name a backend function tool
  (``get_weather``, ``get_weather({"city": "Oslo"})``, ``get_weather*3``): event
  ``session.delegation.created {delegation: {id: "dlg_...", type: "delegation",
  target: "client"|"responses", response_id?}, offset_ms}`` - ``offset_ms`` is the
  utterance's end, so the transcript up to it holds the request; the task text is never
  sent (``session.delegations()`` keeps it as ``task``). Then it says "One moment."
  after ``acknowledgement_delay_ms`` unless commentary or thinking lands first.
  Otherwise it answers ``You said: <words>``. ``/delegate`` or
  ``force_delegation(task)`` delegate at once, at the current clock.
* The model's words are ``session.output_transcript.delta`` fragments, 200 ms each on
  the timeline (on WebRTC also audio on the track). Commentary is spoken verbatim
  when it lands; thinking and instructions are silent.
* **Client delegation**: answer with ``session.{thinking,commentary,instructions}.append
  {content, delegation_id, event_id}``. Every append is recorded (``appends()``,
  ``delegations()``): kind, content, ``client_event_id``, clock at arrival,
  ``start_ms``/``end_ms``, status ``pending``/``landed``/``incomplete`` - count them to
  assert exactly-once. An unknown id is ``delegation_not_found`` (rule
  ``unknown_delegation="accept"`` places it instead, under ``foreign``); a finished
  one (``finish_delegation``, or rule ``finish_on_commentary``) ``delegation_not_active``;
  over 500 tokens (4 characters a token) ``string_above_max_length``.
* **Responses delegation** (``delegation: {type: "responses", responses: {model,
  tools: [{type: "function", name, ...}]}}``): after ``session.delegation.created`` the
  backend's Responses stream arrives as ``response.event {delegation_id, event}``
  (``response.created``, ``.in_progress``, ``.output_item.added``,
  ``.function_call_arguments.delta/.done``, ``.output_item.done`` - the completed
  ``function_call`` with ``call_id``, ``name``, ``arguments`` - ``.completed``). Send one
  ``response.item.create {item: {type: "function_call_output", call_id, output}}`` per
  call, then one ``response.create``: the continuation (same ``delegation_id``, envelopes
  carry the create's ``client_event_id``) answers ``Tool results: name -> output.`` and
  the voice says it. A second ``response.create`` while one runs is refused with
  ``conversation_already_has_active_response`` (the Realtime wording, naming the running
  ``resp_``); one before every call has its output ``tool_outputs_incomplete``; an
  unknown or repeated ``call_id`` ``invalid_value``/``tool_output_already_given``.

Errors answer a command with ``{type: "error", client_event_id, error: {type, code,
message, param, client_event_id}}``, to the connection that sent it only; every other
answer (``session.started``, ``session.updated``, the acks, ``session.closed`` for
``session.close``, ``response.event`` of an app-started response) carries the command's
``event_id`` as top-level ``client_event_id``. Codes the emulator chose are listed in
``errors.py``. Knobs: :class:`LiveRules` (``rules.py``) and the shared
:class:`~rtclient.emulator.Faults`, whose ``close_after_delegation`` ends a session with
``session.closed`` right after a delegation is created.

Modules: ``session`` (one session: connections, commands, close), ``timeline`` (the
audio-driven clock), ``voice`` (the scripted voice model), ``backend`` (the scripted
Responses backend), ``delegations`` (the record of delegations and appends),
``schema`` (strict checks), ``config`` (the resolved session object), ``media`` (audio
formats), ``permissions`` (a WebRTC frontend's limits), ``errors`` (the error event and
the emulator's codes), ``rules`` (the knobs), ``routes`` (HTTP, WebSocket, control).
"""

from .rules import LiveRules
from .session import LiveSession

__all__ = ["LiveRules", "LiveSession"]
