"""``rtclient demo --live``: the GPT-Live delegation story, offline.

GPT-Live's model takes its own turns; what it cannot answer itself it *delegates* to the
application (``session.delegation.created``: an id and a place on the timeline, no task
text) and keeps talking. The application's handler runs on a thread pool and hands back
progress (``task.say()``) and a result, which the client appends as commentary for the
model to speak. The API has no "done" or "timeout" for a delegation, so the client owns
both: each delegation ends exactly once.

The story, against the embedded emulator over a GPT-Live WebSocket on loopback, with a
``LiveClient`` and a pool of three threads:

1. the user asks for an archive search - a **slow** delegation: its handler says where
   it is (two progress commentaries) and answers last;
2. then an inventory count - a **failing** one: its handler raises, and the client
   appends the failure notice the model speaks (the model would otherwise hold the topic
   open, waiting);
3. then a staging check - a **fine** one, answered at once.

The user's words are the emulator's scripted speech (a word containing ``delegate``
makes its model delegate). No microphone: the client streams silence, which moves the
session clock - appended text is placed, and spoken, only while input audio flows.
The timeline shows the server's events in the order the client received them (its
``[SERVER_EVENT]`` trace, as ``rtclient demo`` does), the user's and the handlers'
lines - logged through rtclient's own logger, so that one writer puts every line in the
order it happened - the model's words, and ends with what each delegation did and the
counters, checked against the emulator's own record: every append placed exactly once,
nothing lost.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rtclient.cli import Timeline
from rtclient.logs import logger

WAIT_S = 30.0  # every wait of the story is bounded by this
MS_PER_WORD = 60  # the emulator's speech: quick, so the story takes a few seconds
SLOW, FAILING, FINE = "archive search (slow)", "inventory count (failing)", "staging check"
ASKED = {
    SLOW: "Please delegate a search of the archive for the Oslo contract.",
    FAILING: "Also delegate the inventory count for the north warehouse.",
    FINE: "And delegate a quick staging health check.",
}
SAID = {
    SLOW: [
        "I am searching the archive now, box 1 of 5.",
        "Box 4 of 5 has a match, I am checking it.",
    ],
    FINE: "Staging is healthy: all 12 checks passed.",
}
RESULT_SLOW = "The Oslo contract is in box 4, signed on 3 March."
FAILURE = "the inventory service is down (503)"
FAILURE_NOTICE = "Sorry, I could not finish that task."


class Story:
    """The three handlers' shared state: which request each delegation got, and the two
    moments the slow one waits for (so the story reads the same on every run)."""

    def __init__(self) -> None:
        self.kind: dict[str, str] = {}  # delegation id -> SLOW / FAILING / FINE
        self.started: dict[str, threading.Event] = {k: threading.Event() for k in ASKED}
        self.box4 = threading.Event()  # the slow one may say its second progress
        self.finish = threading.Event()  # ... and give its result
        self.result_heard = threading.Event()  # the client heard the model say it
        self._spoken = ""
        self.aborted = False
        self._lock = threading.Lock()

    def abort(self) -> None:
        """The story ends early (Ctrl-C, an error): nothing waits any more."""
        self.aborted = True
        self.box4.set()
        self.finish.set()

    def handle(self, task: Any) -> str | None:
        """The delegation handler (a pool thread): the request is the user's words since
        the previous delegation (``task.request``)."""
        request = task.request
        kind = next((k for k, words in ASKED.items() if _same(words, request)), None)
        if kind is None:
            return None  # not part of the story: the client speaks its no-answer notice
        with self._lock:
            self.kind[task.id] = kind
        thread = threading.current_thread().name
        logger.info("[HANDLER] {} ({}) runs on {}: {!r}", task.id, kind, thread, request)
        self.started[kind].set()
        if kind == FAILING:
            raise RuntimeError(FAILURE)
        if kind == FINE:
            return str(SAID[FINE])
        first, second = SAID[SLOW]
        self._say(task, first)
        if not self.box4.wait(WAIT_S) or self.aborted:
            return None
        self._say(task, second)
        if not self.finish.wait(WAIT_S) or self.aborted:
            return None
        logger.info("[HANDLER] {} returns its result", task.id)
        return RESULT_SLOW

    def heard(self, event: dict[str, Any]) -> None:
        """``session.output_transcript.delta`` (the dispatcher thread): the model's words."""
        self._spoken = (self._spoken + str(event.get("delta") or ""))[-200:]
        if self._spoken.endswith(RESULT_SLOW):
            self.result_heard.set()

    def _say(self, task: Any, text: str) -> None:
        logger.info("[HANDLER] {} says (progress): {!r}", task.id, text)
        task.say(text)


def _same(asked: str, heard: str) -> bool:
    def words(text: str) -> list[str]:
        return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()

    return words(asked) == words(heard)


class Speech:
    """The model's transcript deltas as sentences: one ``[MODEL]`` line per sentence (the
    API sends words with no turn boundaries; every sentence here ends in ``.``)."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.words: list[str] = []

    def delta(self, text: str) -> None:
        self.words.append(text)
        sentence = "".join(self.words).strip()
        if sentence.endswith((".", "!", "?")):
            self.words.clear()
            self.timeline.line("MODEL", sentence)


def event_line(event: dict[str, Any], speech: Speech) -> str | None:
    """How the timeline shows a GPT-Live server event (None: not shown). Runs on the
    client's loop thread, in arrival order."""
    kind = event.get("type")
    if kind == "session.started":
        return f"session.started {event['session'].get('id')}"
    if kind == "session.delegation.created":
        delegation = event.get("delegation") or {}
        return f"session.delegation.created {delegation.get('id')} at {event.get('offset_ms')} ms"
    if kind in ("session.commentary.appended", "session.thinking.appended"):
        return f"{kind}: placed on the timeline at {event.get('start_ms')} ms"
    if kind == "session.output_transcript.delta":
        speech.delta(str(event.get("delta") or ""))
        return None
    if kind == "error":
        error = event.get("error") or {}
        return f"error {error.get('code')}: {error.get('message')}"
    if kind == "session.closed":
        return f"session.closed ({event.get('reason')})"
    return None


def sink_for(timeline: Timeline) -> Callable[[Any], None]:
    """A loguru sink: ``[SERVER_EVENT]`` trace lines as :func:`event_line` shows them,
    rtclient's other diagnostics (``[DELEGATION]``, ``[CONNECTION]``) tag first."""
    speech = Speech(timeline)
    closed: list[str] = []

    def sink(message: Any) -> None:
        record = message.record
        text = record["message"]
        if text.startswith("[SERVER_EVENT]"):
            event = record["extra"].get("event")
            shown = event_line(event, speech) if isinstance(event, dict) else None
            if shown is not None:
                timeline.line("SERVER", shown)
            if isinstance(event, dict) and event.get("type") == "session.closed":
                closed.append(str(event.get("reason")))
        elif closed == ["close_requested"] and text.startswith("[CONNECTION]") and "lost" in text:
            pass  # the client reports the end of a session it closed itself as "lost"
        else:
            timeline.sink(message)

    return sink


def run(args: argparse.Namespace, timeline: Timeline) -> int:
    """The story (imports done, the sink installed): 0 when nothing was lost and every
    append was placed exactly once, else 1."""
    from rtclient import LiveClient, Notices
    from rtclient.emulator import Emulator
    from rtclient.emulator.live import LiveRules

    timeline.begin("start (times are milliseconds since this line)")
    story = Story()
    emulator = Emulator(live_rules=LiveRules(ms_per_word=MS_PER_WORD)).start()
    try:
        timeline.line("DEMO", f"emulator on {emulator.url} (GPT-Live over a WebSocket on loopback)")
        with ThreadPoolExecutor(3, thread_name_prefix="delegation") as pool:
            client = LiveClient(
                api_key="sk-demo",
                base_url=emulator.url,
                delegation=story.handle,
                executor=pool,
                notices=Notices(failure=FAILURE_NOTICE),
                delegation_timeout=WAIT_S * 2,
            )
            client.on("session.output_transcript.delta", story.heard, raw=True)
            try:
                with client:
                    logger.info(
                        "[DEMO] no microphone: the client streams silence, which moves the "
                        "session clock (appended text is placed only while input audio flows)"
                    )
                    session = emulator.live_session(client.session_id or "")
                    _tell(story, session, emulator)
                    stats = client.stats()
            finally:
                story.abort()  # a story cut short leaves no handler waiting
        record = session.delegations()
    finally:
        emulator.stop()
    return summarise(timeline, story, stats, record)


def _tell(story: Story, session: Any, emulator: Any) -> None:
    def placed(kind: str, count: int) -> bool:
        ids = [d for d, k in story.kind.items() if k == kind]
        appends = [a for d in ids for a in session.appends(d) if a["status"] == "landed"]
        return len(appends) >= count

    def wait(what: str, predicate: Callable[[], bool]) -> None:
        if not emulator.wait_for(predicate, WAIT_S):
            raise TimeoutError(f"the story stalled waiting for {what}")

    for kind in (SLOW, FAILING, FINE):
        logger.info("[USER] {}", ASKED[kind])
        session.simulate_speech(ASKED[kind])
        if not story.started[kind].wait(WAIT_S):
            raise TimeoutError(f"the {kind} delegation never reached its handler")
        if kind == SLOW:
            wait("the first progress", lambda: placed(SLOW, 1))
        else:
            wait(f"the {kind} delegation's answer", lambda k=kind: placed(k, 1))  # type: ignore[misc]
    story.box4.set()
    wait("the second progress", lambda: placed(SLOW, 2))
    story.finish.set()
    wait("the archive search's result", lambda: placed(SLOW, 3))
    if not story.result_heard.wait(WAIT_S):
        raise TimeoutError("the model never said the archive search's result")
    logger.info("[DEMO] every delegation has ended; closing the session")


def summarise(
    timeline: Timeline, story: Story, stats: dict[str, int], record: dict[str, Any]
) -> int:
    """What each delegation did and the counters; the verdict (0: every append of the
    emulator's record placed, none twice, nothing lost) is the exit status."""
    by_id = {d["id"]: d for d in record["delegations"]}
    ids = {kind: d for d, kind in story.kind.items()}
    rows: list[tuple[str, str]] = []
    once = True
    sent = placed = 0
    for kind in (SLOW, FAILING, FINE):
        delegation = by_id.get(ids.get(kind, ""), {"appends": []})
        appends = delegation["appends"]
        landed = [a for a in appends if a["status"] == "landed"]
        contents = [a["content"] for a in appends]
        sent, placed = sent + len(appends), placed + len(landed)
        once = once and len(contents) == len(set(contents)) and len(landed) == len(appends)
        if kind == SLOW:
            did = f"answered after 2 progress updates: {len(landed)} of {len(appends)}"
        elif kind == FAILING:
            did = f"failed ({FAILURE}): the failure notice, {len(landed)} of {len(appends)}"
        else:
            did = f"answered at once: {len(landed)} of {len(appends)}"
        did += " appends placed"
        rows.append((f"{delegation.get('id', '?')} {kind}", did))
    late = stats["late_results"] + stats["duplicate_results"] + stats["results_after_close"]
    lost = stats["lost"] + stats["undelivered_results"] + stats["appends_unplaced"]
    counters = [
        ("delegations", stats["delegations"]),
        ("answered", stats["delegations_answered"]),
        ("failed (handler raised)", stats["delegation_errors"]),
        ("timed out", stats["delegation_timeouts"]),
        ("appends sent", stats["appends_sent"]),
        ("appends placed (the emulator's record)", placed),
        ("late or duplicate results", late),
        ("lost", lost),
        ("silence streamed (ms)", stats["silence_sent_ms"]),
    ]
    width = max(len(name) for name, _ in rows + [(n, "") for n, _ in counters])
    timeline.text("\nsummary")
    for name, did in rows:
        timeline.text(f"  {name:<{width}}  {did}")
    for name, value in counters:
        timeline.text(f"  {name:<{width}}  {value}")
    ok = (
        once
        and lost == 0
        and late == 0
        and sent == placed == stats["appends_sent"]
        and stats["delegations"] == 3
    )
    timeline.text(
        "  every append placed exactly once, nothing lost"
        if ok
        else "  SOMETHING WAS LOST OR REPEATED: see the counters above"
    )
    return 0 if ok else 1
