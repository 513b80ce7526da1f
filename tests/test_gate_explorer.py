"""The real GateMachine in every interleaving of a few triggers (``gate_explorer.py``).

Three CI sizes, each explored completely, cover between them: plain and parameterised
triggers, coalescing, a server VAD response, a lost ``response.created``, a failed send
(retried or not), interrupts (a cancel sent, failed, or marked on creation), watchdog
firings, a create refused with ``invalid_value`` and a close. Each prints its state
count and time (``-rA`` or ``-s`` shows them) and must reach a floor, so an explorer
that explores nothing cannot pass. The larger sizes run from ``bench/gate_explore.py``.

Then the explorer must catch planted bugs, with the shortest counterexample: the RCA's
one busy flag, a watchdog that re-sends, and the coalescing bug it found in
``GateMachine`` itself (fixed; see ``test_gate.py``).
"""

from __future__ import annotations

import pytest
from gate_explorer import (
    Bounds,
    MergesMarkedTriggers,
    OneFlagGate,
    ResendingWatchdog,
    explore,
)

# (bounds, floor): the floor is about half the count at the time of writing.
CI_SIZES = [
    pytest.param(Bounds(triggers="pP"), 7_000, id="plain+params"),
    pytest.param(Bounds(triggers="pp", close=True), 11_000, id="coalesced+close"),
    pytest.param(Bounds(triggers="ppP", cancels=0, invalid=1), 4_000, id="three-triggers"),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("bounds", "floor"), CI_SIZES)
def test_every_interleaving_keeps_every_invariant(bounds: Bounds, floor: int) -> None:
    report = explore(bounds)
    print(report.summary())
    assert not report.violations, report.traces()
    assert report.complete and report.states >= floor


@pytest.mark.timeout(120)
def test_finds_the_one_flag_race() -> None:
    """The RCA's ``responseInProgress``: a VAD response's done frees the flag while our
    create is still unanswered, and the next trigger sends a second create."""
    bounds = Bounds(triggers="pP", send_failures=0, drops=0, cancels=0)
    report = explore(bounds, OneFlagGate, first_only=True)
    print(report.summary())
    print(report.traces())
    assert list(report.violations) == ["two-creates"]
    trace = "\n".join(report.violations["two-creates"])
    assert "VAD starts" in trace and "claims T2" in trace
    assert len(report.paths["two-creates"]) == 6  # breadth first: no shorter trace


@pytest.mark.timeout(120)
def test_finds_a_watchdog_that_resends() -> None:
    bounds = Bounds(triggers="p", send_failures=0, cancels=0)
    report = explore(bounds, ResendingWatchdog, first_only=True)
    print(report.summary())
    print(report.traces())
    assert list(report.violations) == ["watchdog-sent"]
    # Beyond the first symptom: where the late confirmation of the first create lives,
    # the server rejects the re-sent create because of our own response, or answers
    # the same trigger twice.
    report = explore(bounds, ResendingWatchdog, ignore={"watchdog-sent"})
    print(report.summary())
    print(report.traces())
    assert {"two-creates", "own-rejection", "answered-twice"} <= report.violations.keys()
    assert report.complete


@pytest.mark.timeout(120)
def test_finds_the_coalescing_bug_it_found_in_gate_machine() -> None:
    """GateMachine before the fix: a trigger marked to cancel on creation shared its
    re-fired create with a trigger requested after the interrupt."""
    bounds = Bounds(triggers="pp", vad=0, drops=0)
    report = explore(bounds, MergesMarkedTriggers, first_only=True)
    print(report.summary())
    print(report.traces())
    assert list(report.violations) == ["collateral-cancel"]
    assert "claims T2 for t0, t1" in "\n".join(report.violations["collateral-cancel"])
