"""Starting, stopping, waiting, and the command line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

import aiohttp
import pytest

from rtclient.emulator import Emulator

from .conftest import FAST, async_test, connect
from .rawclient import RawClient

pytestmark = pytest.mark.timeout(30)


def test_start_stop_idempotent_and_context_manager() -> None:
    emu = Emulator(pace=FAST)
    assert emu.start() is emu.start()
    assert emu.url == f"http://127.0.0.1:{emu.port}/v1" and emu.port > 0
    assert any(t.name == "rtclient-emulator" for t in threading.enumerate())
    emu.stop()
    emu.stop()
    assert not any(t.name == "rtclient-emulator" for t in threading.enumerate())
    with pytest.raises(RuntimeError):
        emu.start()
    with Emulator(pace=FAST) as other:
        assert other.port > 0


def test_a_taken_port_fails_loudly(emu: Emulator) -> None:
    with pytest.raises(RuntimeError, match="failed to start"):
        Emulator(port=emu.port).start()


@async_test
async def test_stop_with_live_calls_and_sockets(emu: Emulator) -> None:
    call = await RawClient.connect(emu.url)
    socket = await connect(emu, "websocket")
    try:
        await call.until("session.created")
        await socket.until("session.created")
        await asyncio.to_thread(emu.stop)
        await socket.wait_closed()
        assert all(s.closed for s in emu.sessions)
    finally:
        await socket.close()
        await call.close()


@async_test
async def test_wait_for_sees_state_from_another_loop(emu: Emulator) -> None:
    assert not await emu.wait_for_async(lambda: emu.stats()["sessions"] > 0, timeout=0.05)
    assert not emu.wait_for(lambda: emu.stats()["sessions"] > 0, timeout=0.05)
    client = await connect(emu, "websocket")
    try:
        assert await emu.wait_for_async(lambda: emu.stats()["sessions"] == 1, timeout=5)
        (session,) = await asyncio.to_thread(emu.wait_for_sessions, 1)
        await client.send({"type": "response.create", "event_id": "x"})
        assert await emu.wait_for_async(lambda: session.count("completed") == 1, timeout=5)
        assert emu.session(session.id) is session
        with pytest.raises(KeyError):
            emu.session("sess_unknown")
    finally:
        await client.close()


@async_test
async def test_the_command_line() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtclient.emulator", "--port", "0", "--api-key", "sk-cli",
        "--pace", "0.001",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONASYNCIODEBUG": "0"},
    )  # fmt: skip
    assert process.stderr is not None
    try:
        url = ""
        while not url:
            line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
            assert line, "the emulator exited before listening"
            if "listening on " in line:
                url = line.rsplit("listening on ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{url}/realtime/calls", data="v=0", headers={"Authorization": "Bearer sk-no"}
            ) as response:
                assert response.status == 401
            control = url.removesuffix("/v1") + "/_emulator/stats"
            async with http.get(control) as response:
                assert (await response.json())["sessions"] == 0
        client = await RawClient.connect(url, api_key="sk-cli")
        try:
            await client.send(
                {"type": "response.create", "response": {"output_modalities": ["text"]}}
            )
            assert (await client.until("response.done"))["response"]["status"] == "completed"
        finally:
            await client.close()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 20) == 0


@async_test
async def test_in_process_hangup_and_client_close_end_sessions(emu: Emulator) -> None:
    first = await RawClient.connect(emu.url)
    second = await RawClient.connect(emu.url)
    try:
        await first.until("session.created")
        await asyncio.to_thread(emu.hangup, first.call_id)
        assert emu.session(first.call_id).closed
        await second.close()  # the client leaves: its call ends on the server too
        assert await emu.wait_for_async(lambda: emu.stats()["active_sessions"] == 0, timeout=10)
    finally:
        await first.close()
        await second.close()
