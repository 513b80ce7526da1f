"""Phone calls (SIP), both APIs, against the emulator over real HTTP on 127.0.0.1.

The emulator rings a call: it posts the webhook, signed by the ``standardwebhooks``
package, to a real HTTP endpoint (``phone.Hook``) whose handler does what an app does
with rtclient: ``verify_webhook`` (the ``openai`` package's verifier), ``OnceOnly``,
``answer_call`` / ``accept_call`` / ``reject_call`` / ``refer_call``. The emulator is
the referee: its record of each call says which API answered, with what status it was
rejected, where it was transferred, and every call-control request it got.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cluster import wait_until
from phone import Hook, api_post, control, dial, new_secret, record, wav_file
from threads import run_at_once

import rtclient
from rtclient import (
    CallNotFoundError,
    Dtmf,
    IncomingCall,
    OnceOnly,
    RealtimeClient,
    WebhookSignatureError,
    WebhookTimestampError,
    WebhookVerificationError,
    accept_call,
    answer_call,
    refer_call,
    reject_call,
    tool,
    verify_webhook,
)
from rtclient.emulator import Emulator, Pace
from rtclient.emulator.sip import switchboard
from rtclient.sip import accept_body, hangup_call

KEY = "sk-test-sip-0123456789"
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """An emulator with the API's server VAD (the caller speaks, a response follows)."""
    with Emulator(pace=Pace(delay=0.005)) as emulator:
        yield emulator


@pytest.fixture
def secret() -> str:
    return new_secret()


class Desk:
    """A test's webhook endpoint: verifies, keeps every IncomingCall and refusal."""

    def __init__(self, secret: str, act: Any = None) -> None:
        self.secret = secret
        self.calls: list[IncomingCall] = []
        self.refused: list[WebhookVerificationError] = []
        self.act = act
        self.lock = threading.Lock()
        self.hook = Hook(self.handle)

    def handle(self, body: bytes, headers: Mapping[str, str]) -> int:
        try:
            call = verify_webhook(body, headers, secret=self.secret)
        except WebhookVerificationError as exc:
            with self.lock:
                self.refused.append(exc)
            return 400
        assert call is not None
        with self.lock:
            self.calls.append(call)
        if self.act is not None:
            self.act(call)
        return 200

    def only(self, api: str = "realtime") -> IncomingCall:
        (call,) = [c for c in self.calls if c.api == api]
        return call


@pytest.fixture
def desks(secret: str) -> Iterator[Any]:
    made: list[Desk] = []

    def make(act: Any = None) -> Desk:
        made.append(Desk(secret, act))
        return made[-1]

    yield make
    for desk in made:
        desk.hook.close()


def ring(emu: Emulator, desk: Desk, **body: Any) -> dict[str, Any]:
    return dial(emu.control_url, url=desk.hook.url, secret=desk.secret, **body)


def api(emu: Emulator) -> dict[str, Any]:
    return {"api_key": KEY, "base_url": emu.url}


# ----------------------------------------------------------------- answered
def test_a_signed_webhook_is_answered_the_caller_is_heard_and_the_tool_runs_once(
    emu: Emulator, desks: Any
) -> None:
    runs: list[int] = []
    clients: list[RealtimeClient] = []
    once = OnceOnly()

    @tool
    def lookup_order(order_id: int) -> dict[str, Any]:
        """The status of an order.

        Args:
            order_id: the order number.
        """
        runs.append(order_id)
        return {"order_id": order_id, "status": "shipped"}

    def answer(call: IncomingCall) -> None:
        if once.first(*call.dedupe_keys()):
            clients.append(
                answer_call(
                    call,
                    session={"instructions": "You are the shop."},
                    tools=[lookup_order],
                    executor=pool,
                    greeting="Say hello.",
                    **api(emu),
                )
            )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        desk = desks(answer)
        rung = ring(emu, desk, **{"from": "+14155550100"})
        try:
            assert [d["status"] for d in rung["deliveries"]] == [200]
            assert rung["status"] == "accepted" and rung["answered_by"] == "realtime"
            call = desk.only()
            assert call.call_id == rung["call_id"] and call.caller and "+14155550100" in call.caller
            body = rung["accept_body"]
            assert body["type"] == "realtime" and body["model"] == "gpt-realtime-2"
            assert [t["name"] for t in body["tools"]] == ["lookup_order"]
            (client,) = clients
            session = emu.session(call.call_id)
            assert session.media == "sip"
            said = control(
                emu.control_url,
                "POST",
                f"/sip/calls/{call.call_id}/speech",
                {"text": 'lookup_order({"order_id": 7})'},
            )[1]
            assert said["response_id"], said  # server VAD answered the caller's turn

            def tool_round_done() -> bool:
                return any(
                    e.get("type") == "response.done"
                    and "Tool results" in json.dumps(e)
                    and e["response"]["status"] == "completed"
                    for e in session.server_events
                )

            assert emu.wait_for(tool_round_done, 20), session.counters
            assert runs == [7], "the tool ran exactly once"
            outputs = [
                e
                for e in session.client_events
                if e.get("type") == "conversation.item.create"
                and e["item"]["type"] == "function_call_output"
            ]
            assert len(outputs) == 1 and "shipped" in outputs[0]["item"]["output"]
            assert session.counters.get("rejections", 0) == 0
            heard = wait_until(
                lambda: record(emu.control_url, call.call_id)["frames_heard"], 10, "the voice"
            )
            assert heard > 0, "the model's answer reached the caller's phone"
            assert session.counters["audio_frames_in"] > 0, "the caller's audio reached it"
            assert client.stats()["lost"] == 0
        finally:
            for client in clients:
                client.hangup()


# --------------------------------------------------------------- refused
def test_a_forged_or_unsigned_webhook_is_400_and_nothing_is_accepted(
    emu: Emulator, desks: Any
) -> None:
    desk = desks(lambda call: accept_call(call, **api(emu)))
    for signature in ("forged", "missing"):
        rung = ring(emu, desk, signature=signature)
        assert [d["status"] for d in rung["deliveries"]] == [400]
        assert rung["status"] == "ringing" and rung["requests"] == []
    assert [type(e) for e in desk.refused] == [WebhookSignatureError] * 2
    assert desk.calls == [] and emu.sessions == []


@pytest.mark.parametrize("offset", [-600, 600])
def test_a_stale_or_post_dated_webhook_is_refused(emu: Emulator, desks: Any, offset: int) -> None:
    desk = desks(lambda call: accept_call(call, **api(emu)))
    rung = ring(emu, desk, timestamp_offset=offset)
    assert [d["status"] for d in rung["deliveries"]] == [400]
    assert [type(e) for e in desk.refused] == [WebhookTimestampError]
    assert rung["status"] == "ringing" and emu.sessions == []
    # the same message, delivered again in time, is taken: only its timestamp was wrong
    (retry,) = control(emu.control_url, "POST", f"/sip/calls/{rung['call_id']}/redeliver", {})[1]
    assert retry["status"] == 200 and retry["webhook_id"] == rung["deliveries"][0]["webhook_id"]
    assert record(emu.control_url, rung["call_id"])["status"] == "accepted"


def test_verify_webhook_refuses_a_tampered_body_the_wrong_secret_and_missing_headers(
    emu: Emulator, desks: Any, secret: str
) -> None:
    bodies: list[tuple[bytes, dict[str, str]]] = []

    def keep(body: bytes, headers: Mapping[str, str]) -> int:
        bodies.append((body, dict(headers)))
        return 200

    hook = Hook(keep)
    try:
        dial(emu.control_url, url=hook.url, secret=secret, apis=["realtime", "live"])
    finally:
        hook.close()
    for body, headers in bodies:
        call = verify_webhook(body, headers, secret=secret)
        assert call is not None and call.webhook_id == headers["webhook-id"]
        with pytest.raises(WebhookSignatureError):
            verify_webhook(body.replace(b"+15550100", b"+15550666"), headers, secret=secret)
        with pytest.raises(WebhookSignatureError):
            verify_webhook(body, headers, secret=new_secret())
        for missing in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            partial = {k: v for k, v in headers.items() if k.lower() != missing}
            with pytest.raises(WebhookSignatureError, match=missing):
                verify_webhook(body, partial, secret=secret)
        try:
            verify_webhook(body, headers, secret=new_secret())
        except WebhookSignatureError as exc:
            assert secret not in str(exc) and body.decode() not in str(exc)
    assert {verify_webhook(b, h, secret=secret).api for b, h in bodies} == {"realtime", "live"}


# -------------------------------------------------------------- at most once
def test_a_duplicated_delivery_is_accepted_once(emu: Emulator, desks: Any) -> None:
    once = OnceOnly()
    answered: list[str] = []
    duplicates: list[str] = []

    def act(call: IncomingCall) -> None:
        if not once.first(*call.dedupe_keys()):
            duplicates.append(call.webhook_id)
            return
        accept_call(call, **api(emu))
        answered.append(call.call_id)

    desk = desks(act)
    rung = ring(emu, desk, copies=3)  # three copies of the first delivery, at once
    call_id = rung["call_id"]
    assert [d["status"] for d in rung["deliveries"]] == [200, 200, 200]
    deliveries = run_at_once(
        3,
        lambda _: control(emu.control_url, "POST", f"/sip/calls/{call_id}/redeliver", {})[1],
    )  # and three retries at once, later
    assert all(d[0]["status"] == 200 for d in deliveries)
    final = record(emu.control_url, call_id)
    assert answered == [call_id] and len(duplicates) == 5
    assert [r["verb"] for r in final["requests"]] == ["accept"], "accepted once"
    assert len({d["webhook_id"] for d in final["deliveries"]}) == 1
    assert sorted(d["attempt"] for d in final["deliveries"]) == [1, 2, 3, 4, 5, 6]
    assert len([s for s in emu.sessions if s.call_id == call_id]) == 1


def test_once_only_claims_each_key_once_and_forgets_when_told() -> None:
    clock = [0.0]
    once = OnceOnly(ttl=10, max_keys=3, clock=lambda: clock[0])
    wins = run_at_once(8, lambda _: once.first("webhook:wh_1", "realtime:rtc_1"))
    assert wins.count(True) == 1
    assert not once.first("webhook:wh_2", "realtime:rtc_1"), "same call, another message"
    assert not once.first("webhook:wh_1", "realtime:rtc_2"), "a retry of the message"
    once.forget("webhook:wh_1", "realtime:rtc_1")
    assert once.first("webhook:wh_1", "realtime:rtc_1"), "given back: a retry may act"
    clock[0] = 10.5
    assert len(once) == 0 and once.first("webhook:wh_1"), "claims expire"
    for n in range(5):
        once.first(f"k{n}")
    assert len(once) == 3 and once.first("webhook:wh_1"), "the oldest are dropped first"
    with pytest.raises(ValueError):
        once.first()


# ------------------------------------------------------------- reject, refer
def test_reject_uses_each_apis_default_an_explicit_code_and_checks_the_range(
    emu: Emulator, desks: Any
) -> None:
    desk = desks()
    first, second, third = (ring(emu, desk, apis=["realtime", "live"]) for _ in range(3))
    calls = {c.call_id: c for c in desk.calls}
    for bad in (299, 700, True, "486"):
        with pytest.raises(ValueError):
            reject_call(first["call_id"], status_code=bad, **api(emu))  # type: ignore[arg-type]
    assert record(emu.control_url, first["call_id"])["requests"] == [], "nothing was sent"

    reject_call(calls[first["call_id"]], **api(emu))  # Realtime: the API's default
    reject_call(second["session_id"], api="live", **api(emu))  # Live: rtclient sends 603
    reject_call(calls[third["call_id"]], status_code=486, **api(emu))
    statuses = [record(emu.control_url, r["call_id"]) for r in (first, second, third)]
    assert [(r["status"], r["reject_status"]) for r in statuses] == [
        ("rejected", 603),
        ("rejected", 603),
        ("rejected", 486),
    ]
    assert statuses[1]["requests"] == [{"api": "live", "verb": "reject", "status": 200}]
    with pytest.raises(CallNotFoundError):
        reject_call(first["call_id"], **api(emu))  # once rejected, the call is gone
    with pytest.raises(CallNotFoundError):
        accept_call(calls[first["call_id"]], **api(emu))

    # the emulator holds a client that checks nothing to the same rules
    fourth = ring(emu, desk, apis=["realtime", "live"])
    for path, body, code in (
        (f"/realtime/calls/{fourth['call_id']}/reject", {"status_code": 200}, "invalid_value"),
        (f"/live/sessions/{fourth['session_id']}/reject", {}, "missing_required_parameter"),
        (f"/live/sessions/{fourth['session_id']}/reject", {"status_code": 7000}, "invalid_value"),
        (f"/realtime/calls/{fourth['call_id']}/reject", {"reason": "x"}, "unknown_parameter"),
    ):
        status, refused = api_post(emu.url, path, body, KEY)
        assert (status, refused["error"]["code"]) == (400, code), refused
    assert record(emu.control_url, fourth["call_id"])["status"] == "ringing"


def test_refer_records_the_target_and_ends_the_call_for_its_sideband(
    emu: Emulator, desks: Any
) -> None:
    clients: list[RealtimeClient] = []

    def answer_realtime(call: Any) -> None:  # the app answers through the Realtime API
        if call.api == "realtime":
            clients.append(answer_call(call, **api(emu)))

    desk = desks(answer_realtime)
    rung = ring(emu, desk, apis=["realtime", "live"])
    call_id = rung["call_id"]
    (client,) = clients
    for blank in ("", "   "):
        with pytest.raises(ValueError):
            refer_call(call_id, blank, **api(emu))
    with pytest.raises(CallNotFoundError):  # the Live side did not answer this call
        refer_call(rung["session_id"], "tel:+14155550123", api="live", **api(emu))
    refer_call(desk.only(), "tel:+14155550123", **api(emu))
    final = record(emu.control_url, call_id)
    assert (final["status"], final["refer_target"], final["ended_by"]) == (
        "ended",
        "tel:+14155550123",
        "refer",
    )
    wait_until(lambda: client.closed, 10, "the sideband to close with the call")
    client.close()
    with pytest.raises(CallNotFoundError):
        refer_call(call_id, "sip:agent@example.com", **api(emu))
    with pytest.raises(CallNotFoundError):
        hangup_call(call_id, **api(emu))
    status, refused = api_post(emu.url, f"/realtime/calls/{call_id}/refer", {}, KEY)
    assert (status, refused["error"]["code"]) == (400, "missing_required_parameter")


def test_a_live_call_is_referred_and_hung_up_through_the_live_routes(
    emu: Emulator, desks: Any
) -> None:
    desk = desks()
    for verb in ("refer", "hangup"):
        rung = ring(emu, desk, apis=["live"])
        call = desk.calls[-1]
        assert call.api == "live" and call.call_id == rung["session_id"]
        accept_call(call, session={"instructions": "Be brief."}, **api(emu))
        if verb == "refer":
            refer_call(call, "sip:agent@example.com", **api(emu))
        else:
            hangup_call(call, **api(emu))
        final = record(emu.control_url, rung["call_id"])
        assert final["status"] == "ended" and final["answered_by"] == "live"
        assert final["refer_target"] == ("sip:agent@example.com" if verb == "refer" else None)
        assert emu.live_session(call.call_id).closed


# ------------------------------------------------------------------- DTMF
def test_dtmf_reaches_the_typed_handler_and_on_dtmf_in_order(emu: Emulator, desks: Any) -> None:
    from openai.types.realtime import InputAudioBufferDtmfEventReceivedEvent

    keys: list[Dtmf] = []
    typed: list[Any] = []
    all_in = threading.Event()
    clients: list[RealtimeClient] = []

    def pressed(key: Dtmf) -> None:
        keys.append(key)
        if len(keys) == 4:
            all_in.set()

    def answer(call: IncomingCall) -> None:
        client = answer_call(call, on_dtmf=pressed, **api(emu))
        client.on("input_audio_buffer.dtmf_event_received", typed.append)
        clients.append(client)

    desk = desks(answer)
    call_id = ring(emu, desk)["call_id"]
    try:
        status, bad = control(
            emu.control_url, "POST", f"/sip/calls/{call_id}/dtmf", {"digits": "5E"}
        )
        assert status == 400 and bad["error"]["code"] == "invalid_value"
        status, _ = control(
            emu.control_url, "POST", f"/sip/calls/{call_id}/dtmf", {"digits": "42#*"}
        )
        assert status == 200
        assert all_in.wait(10), keys
        assert [k.key for k in keys] == ["4", "2", "#", "*"]
        assert all(k.api == "realtime" and isinstance(k.received_at, int) for k in keys)
        wait_until(lambda: len(typed) == 4, 10, "the typed subscriber's four events")
        assert all(isinstance(e, InputAudioBufferDtmfEventReceivedEvent) for e in typed)
        assert [e.event for e in typed] == ["4", "2", "#", "*"]
    finally:
        for client in clients:
            client.hangup()


def test_a_live_call_hears_a_sound_file_and_its_dtmf_reaches_a_live_sideband(
    emu: Emulator, desks: Any, tmp_path: Path
) -> None:
    from openai import OpenAI
    from openai.types.live.server_event import TransportDtmfReceived

    desk = desks()
    rung = ring(emu, desk, apis=["realtime", "live"])
    call = desk.only("live")
    accept_call(call, session={"instructions": "Be brief."}, **api(emu))
    sound = wav_file(tmp_path / "caller.wav", milliseconds=600)
    with OpenAI(base_url=emu.url, api_key=KEY).live.sideband.connect(
        session_id=call.call_id
    ) as side:
        control(emu.control_url, "POST", f"/sip/calls/{call.call_id}/dtmf", {"digits": "9"})
        said = control(
            emu.control_url,
            "POST",
            f"/sip/calls/{call.call_id}/speech",
            {"text": "where is my parcel", "file": str(sound)},
        )[1]
        assert said["end_ms"] - said["start_ms"] == 600
        dtmf, loud, answer = None, False, ""
        deadline = time.monotonic() + 20
        for event in side:
            if event.type == "transport.dtmf.received":
                raw = event.model_dump()
                TransportDtmfReceived.model_validate(raw)  # the shape openai.types.live gives
                dtmf = Dtmf.from_event(raw)
            elif event.type == "session.input_audio.append":
                loud = loud or any(event.audio.strip("A="))  # not all-zero PCM
            elif event.type == "session.output_transcript.delta":
                answer += event.delta
            if "parcel" in answer or time.monotonic() > deadline:
                break
    assert dtmf is not None and (dtmf.key, dtmf.api) == ("9", "live") and dtmf.event_id
    assert loud, "the file's audio reached the sideband as the caller's input"
    assert answer.strip() == "You said: where is my parcel"
    final = record(emu.control_url, rung["call_id"])
    assert final["answered_by"] == "live" and final["frames_heard"] > 0


# ---------------------------------------------------------- first accept wins
def test_the_first_accept_wins_across_the_two_apis(emu: Emulator, desks: Any) -> None:
    desk = desks()
    winners = []
    for _ in range(3):
        rung = ring(emu, desk, apis=["realtime", "live"])
        ids = (rung["call_id"], rung["session_id"])
        offered = {c.api: c for c in desk.calls if c.call_id in ids}
        assert set(offered) == {"realtime", "live"}

        def race(i: int, offered: dict[str, IncomingCall] = offered) -> str | None:
            try:
                accept_call(offered["realtime" if i == 0 else "live"], **api(emu))
                return "realtime" if i == 0 else "live"
            except CallNotFoundError:
                return None

        results = run_at_once(2, race)
        (winner,) = [r for r in results if r]
        winners.append(winner)
        loser = "live" if winner == "realtime" else "realtime"
        final = record(emu.control_url, rung["call_id"])
        assert final["answered_by"] == winner
        assert sorted((r["api"], r["status"]) for r in final["requests"]) == sorted(
            [(winner, 200), (loser, 404)]
        )
        with pytest.raises(CallNotFoundError):  # the loser's API has no call now
            reject_call(offered[loser], **api(emu))
        sessions = [s for s in emu.sessions if s.call_id == rung["call_id"]]
        lives = [s for s in emu.live_sessions if s.id == rung["session_id"]]
        assert len(sessions) + len(lives) == 1
        hangup_call(offered[winner], **api(emu))
    assert set(winners) <= {"realtime", "live"}


# ------------------------------------------------------------ accept bodies
def test_accept_bodies_take_each_apis_shape_and_are_checked_before_sending(
    emu: Emulator, desks: Any
) -> None:
    @tool
    def ping() -> str:
        """Pong."""
        return "pong"

    realtime = accept_body("realtime", {"instructions": "Hi."}, tools=[ping])
    assert realtime["type"] == "realtime" and realtime["model"] == "gpt-realtime-2"
    assert realtime["tools"][0]["name"] == "ping" and "session" not in realtime
    live = accept_body("live", {"instructions": "Hi.", "audio": {"output": {"voice": "cedar"}}})
    assert live == {
        "session": {
            "type": "live",
            "model": "gpt-live-1",
            "instructions": "Hi.",
            "audio": {"output": {"voice": "cedar"}},
        }
    }
    for kind, session, tools in (
        ("live", {"audio": {"format": {"type": "audio/pcmu"}}}, ()),
        ("live", {}, (ping,)),
        ("live", {"type": "realtime"}, ()),
        ("realtime", {"max_output_tokens": "lots"}, ()),
        ("live", {"store": "yes"}, ()),
    ):
        with pytest.raises(ValueError):
            accept_body(kind, session, tools=tools)  # type: ignore[arg-type]

    desk = desks()
    rung = ring(emu, desk, apis=["realtime", "live"])
    for path, body, code in (
        (f"/realtime/calls/{rung['call_id']}/accept", {"model": "gpt-realtime"}, "missing"),
        (f"/realtime/calls/{rung['call_id']}/accept", {"type": "realtime", "x": 1}, "unknown"),
        (
            f"/live/sessions/{rung['session_id']}/accept",
            {"session": {"type": "live", "model": "gpt-live-1", "audio": {"format": {}}}},
            "unknown",
        ),
        (
            f"/live/sessions/{rung['session_id']}/accept",
            {"session": {"model": "gpt-live-1"}},
            "missing",
        ),
    ):
        status, refused = api_post(emu.url, path, body, KEY)
        assert status == 400 and refused["error"]["code"].startswith(code), refused
    assert record(emu.control_url, rung["call_id"])["status"] == "ringing"


def test_a_call_the_caller_gave_up_on_is_gone_and_answer_call_says_so(
    emu: Emulator, desks: Any
) -> None:
    desk = desks()
    rung = ring(emu, desk)
    status, missed = control(emu.control_url, "POST", f"/sip/calls/{rung['call_id']}/hangup")
    assert status == 200 and missed["status"] == "missed"
    with pytest.raises(CallNotFoundError):
        answer_call(desk.only(), **api(emu))  # the accept's 404: nothing is attached
    assert [r["status"] for r in record(emu.control_url, rung["call_id"])["requests"]] == [404]


def test_the_emulator_posts_webhooks_only_to_this_machine(emu: Emulator, secret: str) -> None:
    for url in ("http://10.0.0.1/hook", "http://example.com/hook", "ftp://127.0.0.1/x"):
        status, refused = control(
            emu.control_url, "POST", "/sip/calls", {"url": url, "secret": secret}
        )
        assert status == 400 and refused["error"]["param"] == "url"
    status, refused = control(
        emu.control_url, "POST", "/sip/webhook", {"url": "http://127.0.0.1:1/", "secret": "nope"}
    )
    assert status == 400 and refused["error"]["param"] == "secret"
    assert switchboard(emu).calls == []


def test_an_incoming_call_says_who_dialled_and_never_shows_the_secret(
    emu: Emulator, desks: Any, secret: str
) -> None:
    desk = desks()
    rung = ring(emu, desk, sip_headers=[{"name": "from", "value": "sip:+1999@x"}])
    call = desk.only()
    assert call.header("FROM") == "sip:+1999@x" == call.caller and call.header("To") is None
    shown = json.dumps(rung) + repr(call) + repr(switchboard(emu).call(call.call_id).endpoint)
    assert secret not in shown and secret[6:] not in shown
    assert isinstance(rtclient.IncomingCall, type)


class LiveSideband:
    """A stand-in for a GPT-Live sideband client: the ``openai`` package's own
    (``live.sideband.connect``) read on a thread, events handed to ``on`` subscribers
    as dicts - the shape ``answer_call(attach=...)`` and ``on_dtmf`` rely on."""

    def __init__(self, base_url: str, session_id: str) -> None:
        from openai import OpenAI

        self._subscribers: dict[str, list[Any]] = {}
        self._connection = OpenAI(base_url=base_url, api_key=KEY).live.sideband.connect(
            session_id=session_id
        )
        self._socket = self._connection.enter()
        self._reader = threading.Thread(target=self._read, name="live-sideband")
        self._reader.start()

    def on(self, event_type: str, callback: Any, *, raw: bool = True) -> Any:
        self._subscribers.setdefault(event_type, []).append(callback)
        return lambda: self._subscribers[event_type].remove(callback)

    def _read(self) -> None:
        for event in self._socket:
            for callback in list(self._subscribers.get(event.type, ())):
                callback(event.model_dump())

    def close(self) -> None:
        self._socket.close()
        self._reader.join(10)


def test_a_live_call_is_answered_with_your_sideband_and_hung_up_if_it_fails(
    emu: Emulator, desks: Any
) -> None:
    desk = desks()
    rung = ring(emu, desk, apis=["realtime", "live"])
    keys: list[Dtmf] = []
    pressed = threading.Event()

    def got(key: Dtmf) -> None:
        keys.append(key)
        pressed.set()

    side = answer_call(
        desk.only("live"),
        session={"instructions": "Be brief."},
        on_dtmf=got,
        attach=lambda session_id: LiveSideband(emu.url, session_id),
        **api(emu),
    )
    try:
        assert isinstance(side, LiveSideband)
        live = record(emu.control_url, rung["call_id"])
        assert (live["answered_by"], live["accept_body"]["session"]["type"]) == ("live", "live")
        wait_until(
            lambda: emu.live_session(rung["session_id"]).snapshot()["sidebands"], 10, "attach"
        )
        control(emu.control_url, "POST", f"/sip/calls/{rung['session_id']}/dtmf", {"digits": "#"})
        assert pressed.wait(10)
        assert [(k.key, k.api) for k in keys] == [("#", "live")]
    finally:
        hangup_call(desk.only("live"), **api(emu))
        side.close()

    broken = ring(emu, desk, apis=["live"])

    def fails(session_id: str) -> Any:
        raise ConnectionError("no sideband today")

    with pytest.raises(ConnectionError):
        answer_call(desk.calls[-1], attach=fails, **api(emu))
    ended = record(emu.control_url, broken["call_id"])
    assert ended["status"] == "ended", "a call whose sideband failed is hung up"


def test_a_live_call_gets_a_live_client_sideband_by_default(emu: Emulator, desks: Any) -> None:
    """No attach=: a GPT-Live call's sideband is rtclient's own LiveClient, attached
    right after the accept; the caller's keypresses reach on_dtmf through it."""
    from rtclient import LiveClient

    desk = desks()
    rung = ring(emu, desk, apis=["live"])
    keys: list[Dtmf] = []
    pressed = threading.Event()

    def got(key: Dtmf) -> None:
        keys.append(key)
        pressed.set()

    side = answer_call(desk.only("live"), on_dtmf=got, **api(emu))
    try:
        assert isinstance(side, LiveClient) and not side.closed
        live = record(emu.control_url, rung["call_id"])
        assert (live["answered_by"], live["accept_body"]["session"]["type"]) == ("live", "live")
        wait_until(
            lambda: emu.live_session(rung["session_id"]).snapshot()["sidebands"], 10, "attach"
        )
        control(emu.control_url, "POST", f"/sip/calls/{rung['session_id']}/dtmf", {"digits": "5"})
        assert pressed.wait(10)
        assert [(k.key, k.api) for k in keys] == [("5", "live")]
    finally:
        side.close()
        hangup_call(desk.only("live"), **api(emu))
