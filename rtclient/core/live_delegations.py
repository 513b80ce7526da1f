"""Client delegation: each delegation ends exactly once (part of :mod:`.live`).

``session.delegation.created`` names an id and a timeline offset - no task text. The
book records it when the event arrives (loop thread: duplicates and unknown ids are
known at once) and, one step later on the dispatcher thread, starts the handler
(``Start``; its ``executor.submit`` never stalls the loop) and the client's timeout
(``Later``). The handler gets a :class:`~.live_protocol.DelegationTask`: the id, the
transcript up to the offset, and ``say()``/``think()`` for progress.

A delegation is ``open`` until the first of these ends it, and then nothing more is
ever sent for it:

====================  ========================================================
how it ends           what goes out; what is reported
====================  ========================================================
a result              the result, spoken (``session.commentary.append``, split
                      over the per-append limit); outcome ``answered``
``None``              nothing more if it already said something, else the
                      no-answer notice; outcome ``answered``
the handler raised    the failure notice; ``rtclient.delegation.failed``,
                      ``delegation_errors``
a result too long     the failure notice; ``rtclient.delegation.failed``
                      (reason ``too_long``), ``results_too_long``
the client's timeout  the timeout notice (the model holds the topic open until
                      the delegation speaks); ``rtclient.delegation.timed_out``,
                      ``delegation_timeouts``
the session ends      nothing (nothing can land); outcome: the session's error
====================  ========================================================

Whatever comes for an ended delegation - the late result after the timeout, a second
result, progress after the result, anything after ``session.closed`` - is dropped and
reported: ``rtclient.delegation.dropped`` with the reason, and ``late_results``,
``duplicate_results`` or ``results_after_close``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from rtclient.core.gate import Note
from rtclient.core.live_protocol import (
    AppendKind,
    DelegationState,
    DelegationTask,
    DelegationWork,
    Notices,
    ProgressSink,
    brief,
    client_event,
)
from rtclient.core.live_text import Transcript
from rtclient.effects import Effect, Later, Settle, Start
from rtclient.errors import ContentTooLongError, UnknownDelegationError

AppendSender = Callable[[AppendKind, list[str], "DelegationWork | None", bool], list[Effect]]
"""``send(kind, parts, delegation, final)``: the core's way out for appends."""

_KEPT = 1024  # ended delegations remembered (for duplicates and late results)


class Delegations:
    """The session's delegations and their one ending each (under the core's lock)."""

    def __init__(
        self,
        *,
        counters: dict[str, int],
        notes: list[Note],
        send: AppendSender,
        split: Callable[[str], list[str]],
        transcript: Transcript,
        handler: Callable[[DelegationTask], Any] | None,
        sink: ProgressSink | None,
        timeout: float,
        notices: Notices,
    ) -> None:
        if timeout <= 0:
            raise ValueError("delegation_timeout must be > 0")
        self.counters = counters
        self._notes = notes
        self._send = send
        self._split = split
        self._transcript = transcript
        self.handler = handler
        self._sink = sink
        self.timeout = timeout
        self.notices = notices
        self.closed = False
        self._book: OrderedDict[str, DelegationWork] = OrderedDict()
        self._last_offset = 0

    def get(self, delegation_id: str) -> DelegationWork | None:
        return self._book.get(delegation_id)

    # -- the server's side ---------------------------------------------------------------

    def created(self, event: Mapping[str, Any]) -> list[Effect]:
        """``session.delegation.created`` arrived (loop thread): record it."""
        delegation = event.get("delegation")
        if not isinstance(delegation, Mapping) or not isinstance(delegation.get("id"), str):
            self.counters["malformed_events"] += 1
            return []
        delegation_id: str = delegation["id"]
        if delegation_id in self._book:
            self.counters["duplicate_delegations"] += 1
            return [client_event("duplicate", delegation_id)]
        offset = event.get("offset_ms")
        offset_ms = offset if isinstance(offset, int) else 0
        response_id = delegation.get("response_id")
        work = DelegationWork(
            delegation_id,
            str(delegation.get("target") or "client"),
            offset_ms,
            response_id if isinstance(response_id, str) else None,
        )
        if work.target == "client":
            self.counters["delegations"] += 1
            fragments = self._transcript.until(offset_ms)
            work.task = DelegationTask(
                delegation_id, offset_ms, self._last_offset, fragments, self._sink
            )
            self._last_offset = max(self._last_offset, offset_ms)
        self._book[delegation_id] = work
        self._forget_ended()
        return []

    def start(self, event: Mapping[str, Any]) -> list[Effect]:
        """The same event, one step later (dispatcher thread): the timeout, the handler."""
        delegation = event.get("delegation")
        found = delegation.get("id") if isinstance(delegation, Mapping) else None
        work = self._book.get(found) if isinstance(found, str) else None
        if work is None or work.task is None or work.started or work.state != "open":
            return []
        work.started = True
        fx: list[Effect] = [Later(self.timeout, "delegation", work)]
        if self.handler is not None:
            fx.append(Start(work, self.handler, (work.task,)))
        return fx

    def _forget_ended(self) -> None:
        if len(self._book) <= _KEPT:
            return
        for delegation_id, work in list(self._book.items()):
            if len(self._book) <= _KEPT:
                break
            if work.state != "open":
                del self._book[delegation_id]

    # -- the app's side ------------------------------------------------------------------

    def known(self, delegation_id: str) -> DelegationWork:
        """The client delegation ``delegation_id``, or :class:`UnknownDelegationError`."""
        work = self._book.get(delegation_id)
        if work is None or work.target != "client":
            self.counters["unknown_delegation_ids"] += 1
            raise UnknownDelegationError(
                f"delegation {delegation_id!r} was not announced to this session as client "
                "work (ids belong to the session that made them)"
            )
        return work

    def progress(self, work: DelegationWork, kind: AppendKind, content: str) -> list[Effect]:
        """Progress for an open delegation (split; :class:`ContentTooLongError` past the
        bound, and the delegation goes on); for an ended one, dropped and reported."""
        if work.state != "open" or self.closed:
            return self.dropped(work, final=False)
        return self._send(kind, self._split(content), work, False)

    def answer(self, work: DelegationWork, content: str, *, spoken: bool) -> list[Effect]:
        """The app's own result for a delegation (no handler): once."""
        if work.state != "open" or self.closed:
            return self.dropped(work, final=True)
        parts = self._split(content)  # too long: the caller's typed error, still open
        return self._end(work, "answered", self._result(work, parts, spoken))

    def finished(
        self, work: DelegationWork, result: Any, error: BaseException | None
    ) -> list[Effect]:
        """The handler returned ``result`` or raised ``error``."""
        if work.state != "open" or self.closed:
            return self.dropped(work, final=True)
        if error is not None:
            self.counters["delegation_errors"] += 1
            return self._failed(work, "error", brief(error))
        if result is None:
            if work.appends:
                return self._end(work, "answered", [])
            self.counters["delegations_empty"] += 1
            return self._end(work, "answered", self._notice(work, self.notices.no_answer))
        text = result if isinstance(result, str) else json.dumps(result, default=str)
        try:
            parts = self._split(text)
        except ContentTooLongError as exc:
            self.counters["results_too_long"] += 1
            return self._failed(work, "too_long", str(exc))
        except ValueError as exc:  # an empty result
            self.counters["delegation_errors"] += 1
            return self._failed(work, "empty", str(exc))
        return self._end(work, "answered", self._result(work, parts, True))

    def timed_out(self, work: DelegationWork) -> list[Effect]:
        """The client's timeout fired."""
        if work.state != "open" or self.closed:
            return []
        self.counters["delegation_timeouts"] += 1
        fx = [client_event("timed_out", work.id, timeout_s=self.timeout)]
        return self._end(work, "timed_out", fx + self._notice(work, self.notices.timeout))

    def end_all(self, error: BaseException) -> list[Effect]:
        """The session ended: every open delegation is dead (its waiter gets ``error``)."""
        self.closed = True
        fx: list[Effect] = []
        for work in self._book.values():
            if work.state == "open":
                work.state = "dead"
                fx.append(Settle(("delegation", work.id), error, keep=True))
        return fx

    # -- internals -----------------------------------------------------------------------

    def _result(self, work: DelegationWork, parts: list[str], spoken: bool) -> list[Effect]:
        return self._send("commentary" if spoken else "thinking", parts, work, True)

    def _notice(self, work: DelegationWork, text: str) -> list[Effect]:
        return self._send("commentary", self._split(text), work, True)

    def _failed(self, work: DelegationWork, reason: str, error: str) -> list[Effect]:
        fx = [client_event("failed", work.id, reason=reason, error=error)]
        self._note(f"{work.id} failed ({reason}): {error}")
        return self._end(work, "failed", fx + self._notice(work, self.notices.failure))

    def _end(self, work: DelegationWork, state: DelegationState, fx: list[Effect]) -> list[Effect]:
        work.state = state
        if state == "answered":
            self.counters["delegations_answered"] += 1
        outcome = {"delegation_id": work.id, "outcome": state}
        return [*fx, Settle(("delegation", work.id), outcome, keep=True)]

    def dropped(self, work: DelegationWork, *, final: bool) -> list[Effect]:
        """Something for a delegation that has ended: never sent, always reported."""
        if self.closed or work.state == "dead":
            reason, counter = "session_closed", "results_after_close"
        elif work.state == "timed_out":
            reason, counter = "timed_out", "late_results"
        else:
            reason, counter = work.state, "duplicate_results"
        self.counters[counter] += 1
        self._note(f"{'result' if final else 'progress'} for {work.id} dropped: {reason}")
        return [client_event("dropped", work.id, reason=reason, result=final)]

    def _note(self, text: str) -> None:
        self._notes.append(("WARNING", "DELEGATION", "{}", (text,)))
