"""OpenTelemetry metrics for a :class:`~rtclient.RealtimeClient`: where operators look.

Optional: ``pip install 'rtclient[otel]'`` (``opentelemetry-api``); the application
configures the SDK and its exporter as usual. Then, per client::

    from rtclient.metrics import instrument

    client = RealtimeClient(...)
    instrument(client)                        # the global MeterProvider
    instrument(other, meter_provider=provider, attributes={"app.tenant": "acme"})

What is published (meter ``rtclient``):

* An **observable counter per** ``stats()`` **counter**, read from ``client.stats()``
  at each collection: ``rtclient.gate.*`` (``accepted``, ``creates``, ``coalesced``,
  ``queued``, ``rejections``, ``rearmed``, ``rollbacks``, ``confirm_timeouts``,
  ``resolved``, ``failed``), ``rtclient.tools.*`` (``tool_calls``, ``tool_errors``,
  ``tool_timeouts``, ``late_results``, ``oversized_outputs``, ``undelivered_outputs``)
  and ``rtclient.connection.*`` (``events_received``, ``malformed_events``,
  ``unknown_events``, ``creates_sent``, ``server_errors``); ``rtclient.gate.outstanding``
  and ``rtclient.gate.lost`` (which must stay 0) are observable gauges.
* Two histograms, in seconds, recorded by the client itself at the moments they are
  known (on the loop thread; nothing is timed when no client is instrumented):

  ``rtclient.tools.followup.delay``
      from a tool round's completion - its last output confirmed on the wire, its
      response done - to the follow-up ``response.create`` confirmed sent: what the
      gate adds after a tool round (it waits only while another response is active).
  ``rtclient.response.created.delay``
      from a ``response.create`` confirmed sent to the ``response.created`` the server
      attributes to it (by the ticket in its metadata): the server's time to start.

Any number of clients may share a meter provider: each observation carries the
client's ``attributes`` (none by default), and clients with the same attributes are
summed. A counter never goes down: the counts of a client that is gone (detached, or
garbage-collected) are kept in its attribute set's total. ``client.stats()`` stays the
source of every count; this module only publishes it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from rtclient.core.gate import TICKET_METADATA_KEY, GateStats, Ticket, Trigger
from rtclient.logs import logger
from rtclient.tools import ToolStats

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.util.types import AttributeValue


METER_NAME = "rtclient"
FOLLOWUP_DELAY = "rtclient.tools.followup.delay"
CREATED_DELAY = "rtclient.response.created.delay"
# Seconds: from tens of microseconds (the gate's hand-off) to a slow server's start.
BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_PENDING_KEPT = 256  # moments awaiting their other end (a rejected create never gets one)

# stats() key -> (unit, description). The groups come from where each key is counted.
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "accepted": ("{request}", "Requests for a response the gate accepted"),
    "creates": ("{create}", "response.create events the gate claimed"),
    "coalesced": ("{request}", "Requests that rode on another request's create"),
    "queued": ("{request}", "Requests that had to wait for their turn"),
    "rejections": ("{create}", "Our creates refused because a response was active"),
    "rearmed": ("{request}", "Requests re-queued after a rejection or a failed send"),
    "rollbacks": ("{create}", "Creates whose send failed"),
    "confirm_timeouts": ("{create}", "Creates the watchdog reported unconfirmed"),
    "resolved": ("{request}", "Requests served by a response.done"),
    "failed": ("{request}", "Requests failed with a typed error"),
    "outstanding": ("{request}", "Requests waiting now"),
    "lost": ("{request}", "accepted - resolved - failed - outstanding: always 0"),
    "tool_calls": ("{call}", "Tool calls started"),
    "tool_errors": ("{call}", "Error outputs sent (unknown tool, bad arguments, ...)"),
    "tool_timeouts": ("{call}", "Tool calls that timed out"),
    "late_results": ("{call}", "Results that came after their timeout, discarded"),
    "oversized_outputs": ("{call}", "Outputs too large for one event, replaced"),
    "undelivered_outputs": ("{call}", "Outputs that could not be sent"),
    "events_received": ("{event}", "Server events received"),
    "malformed_events": ("{event}", "Server messages that were not a JSON event"),
    "unknown_events": ("{event}", "Server events of a type the API does not define"),
    "creates_sent": ("{create}", "response.create events on the wire"),
    "server_errors": ("{event}", "error events from the server"),
}
GAUGES = frozenset({"outstanding", "lost"})
_GATE_KEYS = frozenset(f.name for f in dataclasses.fields(GateStats)) | {"lost"}
_TOOL_KEYS = frozenset(f.name for f in dataclasses.fields(ToolStats))

AttrKey = tuple[tuple[str, Any], ...]


class Observable(Protocol):
    """What this module needs of a client (``RealtimeClient`` is one): its counters and
    the public observer hook. Metrics never import the client."""

    def stats(self) -> dict[str, int]: ...
    def add_observer(self, observer: Any) -> None: ...
    def remove_observer(self, observer: Any) -> None: ...


def instrument_name(key: str) -> str:
    """The instrument that publishes ``stats()[key]``."""
    group = "gate" if key in _GATE_KEYS else "tools" if key in _TOOL_KEYS else "connection"
    return f"rtclient.{group}.{key}"


def instrument(
    client: Observable,
    *,
    meter_provider: MeterProvider | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> ClientMetrics:
    """Publish ``client``'s counters and latencies through OpenTelemetry.

    ``meter_provider`` defaults to the global one (``opentelemetry.metrics``); a client
    is instrumented once. Returns the hook the client records into; ``detach()`` it to
    stop (its counts stay in the totals).
    """
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise ImportError(
            "rtclient.metrics needs opentelemetry-api: pip install 'rtclient[otel]'"
        ) from exc

    if client in _INSTRUMENTED:
        raise ValueError(f"{client!r} is already instrumented")
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    registry = _registry(provider)
    hook = ClientMetrics(registry, client, dict(attributes or {}))
    registry.add(hook, client)
    client.add_observer(hook)
    _INSTRUMENTED[client] = hook
    return hook


class ClientMetrics:
    """One client's side: the moments the client reports, turned into histogram points.

    The client calls ``round_complete``, ``create_sent`` and ``response_created`` (on
    the loop thread, or the dispatcher for a round completed by a ``response.done``);
    each is a few dict operations under a lock and never raises.
    """

    def __init__(self, registry: _Registry, client: Observable, attributes: dict[str, Any]) -> None:
        self._registry = registry
        self._client = weakref.ref(client)
        self.attributes = attributes
        self._key: AttrKey = tuple(sorted(attributes.items()))
        self._lock = threading.Lock()
        self._rounds: OrderedDict[Trigger, float] = OrderedDict()
        self._sent: OrderedDict[str, float] = OrderedDict()
        self._detached = False

    def __repr__(self) -> str:
        return f"<ClientMetrics {self._client()!r} {self.attributes}>"

    # -- the client's moments --------------------------------------------------------

    def round_complete(self, trigger: Trigger) -> None:
        """A tool round's last output is on the wire (and its response done): its
        follow-up ``trigger`` goes to the gate now."""
        with self._lock:
            _put(self._rounds, trigger, time.monotonic())

    def create_sent(self, ticket: Ticket) -> None:
        """``ticket``'s ``response.create`` was confirmed on the wire."""
        now = time.monotonic()
        with self._lock:
            _put(self._sent, ticket.event_id, now)
            starts = [self._rounds.pop(t) for t in ticket.triggers if t in self._rounds]
        for start in starts:
            self._record(self._registry.followup_delay, now - start)

    def response_created(self, event: Mapping[str, Any]) -> None:
        """A ``response.created`` arrived; if it names one of our creates, time it."""
        now = time.monotonic()
        response = event.get("response")
        metadata = response.get("metadata") if isinstance(response, Mapping) else None
        ticket_id = metadata.get(TICKET_METADATA_KEY) if isinstance(metadata, Mapping) else None
        if not isinstance(ticket_id, str):
            return
        with self._lock:
            start = self._sent.pop(ticket_id, None)
        if start is not None:
            self._record(self._registry.created_delay, now - start)

    def _record(self, histogram: Any, seconds: float) -> None:
        if self._detached:
            return
        try:
            histogram.record(seconds, self.attributes)
        except Exception:  # a metrics backend's failure must not reach the client
            logger.exception("[METRICS] a histogram point was not recorded")

    # -- lifecycle -------------------------------------------------------------------

    def detach(self) -> None:
        """Stop publishing this client; its counts so far stay in the totals."""
        client = self._client()
        if client is not None and _INSTRUMENTED.get(client) is self:
            client.remove_observer(self)
            del _INSTRUMENTED[client]
        self._detached = True
        self._registry.remove(self)

    def read(self) -> dict[str, int] | None:
        """The client's ``stats()`` now; None once it is gone (or unusable here)."""
        client = self._client()
        if client is None or self._detached:
            return None
        try:
            return client.stats()
        except Exception:  # e.g. ForkedProcessError in a forked child
            return None


class _Registry:
    """One meter's instruments, and every client publishing through them."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._lock = threading.Lock()
        self._clients: dict[int, tuple[ClientMetrics, dict[str, int]]] = {}  # with last stats
        self._retired: dict[AttrKey, dict[str, int]] = {}  # the counts of clients gone
        self._keys: set[str] = set()
        self.followup_delay = self._histogram(
            FOLLOWUP_DELAY,
            "From a tool round's last output on the wire to its follow-up response.create "
            "confirmed sent",
        )
        self.created_delay = self._histogram(
            CREATED_DELAY, "From a response.create confirmed sent to its response.created"
        )

    def _histogram(self, name: str, description: str) -> Any:
        try:
            return self.meter.create_histogram(
                name, unit="s", description=description, explicit_bucket_boundaries_advisory=BUCKETS
            )
        except TypeError:  # an opentelemetry-api before the advisory (1.30)
            return self.meter.create_histogram(name, unit="s", description=description)

    def add(self, hook: ClientMetrics, client: Observable) -> None:
        stats = client.stats()
        with self._lock:
            self._clients[id(hook)] = (hook, {})
            new = [key for key in stats if key not in self._keys]
            self._keys.update(new)
        for key in new:
            unit, description = DESCRIPTIONS.get(key, ("1", f"stats()[{key!r}]"))
            create = (
                self.meter.create_observable_gauge
                if key in GAUGES
                else self.meter.create_observable_counter
            )
            create(
                instrument_name(key),
                callbacks=[self._callback(key)],
                unit=unit,
                description=description,
            )

    def remove(self, hook: ClientMetrics) -> None:
        final = hook.read() if hook._client() is not None else None
        with self._lock:
            entry = self._clients.pop(id(hook), None)
            if entry is not None:
                self._retire(hook, final or entry[1])

    def _retire(self, hook: ClientMetrics, stats: Mapping[str, int]) -> None:
        """Under the lock: keep a gone client's counts in its attribute set's total."""
        totals = self._retired.setdefault(hook._key, {})
        for key, value in stats.items():
            if key not in GAUGES:
                totals[key] = totals.get(key, 0) + value

    def _callback(self, key: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return self.observe(key)

        return observe

    def observe(self, key: str) -> list[Observation]:
        """One instrument's points: per attribute set, live clients plus retired ones."""
        from opentelemetry.metrics import Observation

        with self._lock:
            hooks = [hook for hook, _ in self._clients.values()]
        readings = [(hook, hook.read()) for hook in hooks]  # stats() outside our lock
        sums: dict[AttrKey, int] = {}
        attributes: dict[AttrKey, Mapping[str, Any]] = {}
        with self._lock:
            for hook, stats in readings:
                entry = self._clients.get(id(hook))
                if entry is None:
                    continue  # detached meanwhile: already retired
                if stats is None:  # the client is gone: its last reading is final
                    del self._clients[id(hook)]
                    self._retire(hook, entry[1])
                    continue
                self._clients[id(hook)] = (hook, stats)
                attributes[hook._key] = hook.attributes
                sums[hook._key] = sums.get(hook._key, 0) + stats.get(key, 0)
            if key not in GAUGES:
                for attr_key, totals in self._retired.items():
                    attributes.setdefault(attr_key, dict(attr_key))
                    sums[attr_key] = sums.get(attr_key, 0) + totals.get(key, 0)
        return [Observation(value, dict(attributes[k])) for k, value in sums.items()]


# Each client's hook, so a client is instrumented once (weak: a gone client's entry goes).
_INSTRUMENTED: weakref.WeakKeyDictionary[Any, ClientMetrics] = weakref.WeakKeyDictionary()
_registries: dict[int, tuple[MeterProvider, _Registry]] = {}  # by id(provider), held
_registries_lock = threading.Lock()


def _registry(provider: MeterProvider) -> _Registry:
    """The one registry of ``provider``: its meter and instruments are created once (the
    SDK ignores a second instrument of the same name, callbacks and all)."""
    with _registries_lock:
        held = _registries.get(id(provider))
        if held is None:
            from rtclient import __version__

            held = _registries[id(provider)] = (
                provider,
                _Registry(provider.get_meter(METER_NAME, __version__)),
            )
        return held[1]


def _put(store: OrderedDict[Any, float], key: Any, value: float) -> None:
    store[key] = value
    while len(store) > _PENDING_KEPT:
        store.popitem(last=False)
