"""rtclient.metrics: the client's counters and latencies through OpenTelemetry.

Read back with the OpenTelemetry SDK's ``InMemoryMetricReader``, against the emulator:
a tool round puts a point in both histograms, and every published counter equals
``client.stats()``.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rtclient import RealtimeClient, tool
from rtclient.emulator import Emulator

otel_sdk = pytest.importorskip("opentelemetry.sdk.metrics", reason="the 'otel' test extra")
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

from rtclient import metrics  # noqa: E402

pytestmark = pytest.mark.timeout(90)
Connect = Callable[..., RealtimeClient]


@tool
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    reader.provider = provider  # type: ignore[attr-defined]
    yield reader
    provider.shutdown()


def collect(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Instrument name -> its data points, from one collection."""
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "rtclient"
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    return points


def value(points: dict[str, list[Any]], name: str, **attributes: Any) -> Any:
    (point,) = [p for p in points[name] if dict(p.attributes or {}) == attributes]
    return point.value


def test_a_tool_round_is_timed_and_the_counters_are_stats(
    rt_emulator: Emulator, rt_connect: Connect, reader: InMemoryMetricReader
) -> None:
    client = rt_connect(tools=[add])
    hook = metrics.instrument(client, meter_provider=reader.provider)  # type: ignore[attr-defined]
    assert client._core.observers == [hook]
    answer = client.ask('use add({"a": 2, "b": 3})', timeout=30)
    assert "add -> 5" in answer.text and len(answer.response_ids) == 2
    client.close()  # nothing changes from here on: the counters can be compared exactly

    points = collect(reader)
    (followup,) = points[metrics.FOLLOWUP_DELAY]
    assert followup.count == 1 and followup.min >= 0  # the one follow-up create
    (created,) = points[metrics.CREATED_DELAY]
    assert created.count == 2 and created.min >= 0  # the question's create and the follow-up's

    stats = client.stats()
    assert stats["tool_calls"] == 1 and stats["creates"] == 2 and stats["lost"] == 0
    for key, count in stats.items():
        name = metrics.instrument_name(key)
        assert value(points, name) == count, name
    assert set(points) == {metrics.instrument_name(k) for k in stats} | {
        metrics.FOLLOWUP_DELAY,
        metrics.CREATED_DELAY,
    }
    assert metrics.instrument_name("rejections") == "rtclient.gate.rejections"
    assert metrics.instrument_name("tool_errors") == "rtclient.tools.tool_errors"
    assert metrics.instrument_name("creates_sent") == "rtclient.connection.creates_sent"


def test_clients_share_a_provider_and_counters_never_go_down(
    rt_emulator: Emulator, rt_connect: Connect, reader: InMemoryMetricReader
) -> None:
    provider = reader.provider  # type: ignore[attr-defined]
    first, second = rt_connect(), rt_connect()
    third = RealtimeClient(api_key="sk-test", base_url=rt_emulator.url, loopback_only=True)
    third.connect()
    metrics.instrument(first, meter_provider=provider, attributes={"tenant": "a"})
    hook = metrics.instrument(second, meter_provider=provider, attributes={"tenant": "a"})
    metrics.instrument(third, meter_provider=provider, attributes={"tenant": "b"})
    with pytest.raises(ValueError, match="already instrumented"):
        metrics.instrument(first, meter_provider=provider)
    first.ask("hello", timeout=30)
    second.ask("hello", timeout=30)
    third.ask("hello", timeout=30)
    creates = "rtclient.gate.creates"
    points = collect(reader)
    assert value(points, creates, tenant="a") == 2 and value(points, creates, tenant="b") == 1

    hook.detach()  # its counts stay in tenant a's total
    assert second._core.observers == []
    second.ask("once more, unpublished", timeout=30)
    first.ask("once more", timeout=30)
    third.close()
    gone = weakref.ref(third)
    del third
    gc.collect()
    assert gone() is None  # a client that is gone keeps its counts too
    points = collect(reader)
    assert value(points, creates, tenant="a") == 3 and value(points, creates, tenant="b") == 1
    assert value(points, "rtclient.gate.lost", tenant="a") == 0


def test_an_uninstrumented_client_times_nothing(rt_connect: Connect) -> None:
    client = rt_connect(tools=[add])
    assert client._core.observers == []
    client.ask('use add({"a": 1, "b": 1})', timeout=30)
    assert client._core.observers == []
