"""The benchmark's smoke mode runs in the suite so that it cannot rot (no times asserted).

Also the delay proxy of the DICOMweb benchmark (``benchmarks/delay_proxy.py``) against a tiny
keep-alive HTTP server: latency, the server's close reaching the client (and later client bytes
never reaching a closed server), a reset when the server is down, a quiet stop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.support.loop_server import LoopServer
from tests.support.orthanc import find_dicomweb_plugin, find_orthanc
from tests.support.thirdparty import find_dicomizer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _run_smoke(tmp_path: Path, *args: str) -> dict[str, Any]:
    if not find_dicomizer():
        if os.environ.get("CI"):
            pytest.fail("OrthancWSIDicomizer is required when CI is set", pytrace=False)
        pytest.skip("OrthancWSIDicomizer is not installed")
    env = {**os.environ, "DICOMSLIDE_BENCH_PEERS_PYTHON": str(tmp_path / "no-peers-python")}
    run_py = str(ROOT / "benchmarks" / "run.py")
    result = subprocess.run(
        [sys.executable, run_py, "--smoke", "--out", str(tmp_path), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    reports = list(tmp_path.glob("*.json"))
    assert reports, result.stdout[-2000:]
    doc: dict[str, Any] = json.loads(reports[0].read_text())
    assert doc["smoke"] is True
    assert (tmp_path / "RESULTS.md").is_file()
    return doc


def _no_errors(summary: dict[str, Any], label: str, task: str) -> dict[str, Any]:
    entry: dict[str, Any] = summary[label][task]
    assert not entry["errors"], (label, task, entry["errors"])
    return entry


def test_benchmark_smoke_run_writes_results(tmp_path: Path) -> None:
    doc = _run_smoke(tmp_path)
    (section,) = doc["sections"]
    summary = section["summary"]
    # Ours' prefetch goes through dicomslide.prefetch; the region pattern keeps its own name.
    for label in ("dicomslide", "dicomslide_sync"):
        assert _no_errors(summary, label, "prefetch")["cold_tiles_per_s"]
        assert _no_errors(summary, label, "prefetch_regions")["cold_tiles_per_s"]
        extra = section["results"]["runs"][label]["prefetch"]["extra"][0]
        assert extra["result"]["fetched_frames"] == section["plan"]["tile_counts"][0]
    for label in ("dask[threads]", "dask[1 process]", "dask[2 processes]"):
        assert _no_errors(summary, label, "dask")["cold_s"]
    progress = _no_errors(summary, "progress", "progress")
    assert set(progress["mode_median_s"]) == {"none", "callback", "bar", "cli-none", "cli-bar"}
    assert progress["mode_calls"]["callback"] >= 2  # at the start and at the end
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| compute (cold) |" in md
    assert "2 / 1 processes" in md
    assert "Progress overhead" in md
    assert "level 0 by 2048² regions, tiles/s (cold)" in md


def test_benchmark_smoke_dicomweb_prefetch_and_dask(tmp_path: Path) -> None:
    for found, what in (
        (find_orthanc(), "Orthanc (Debian package orthanc)"),
        (find_dicomweb_plugin(), "the Orthanc DICOMweb plugin (orthanc-dicomweb)"),
    ):
        if not found:
            if os.environ.get("CI"):
                pytest.fail(f"{what} is required when CI is set", pytrace=False)
            pytest.skip(f"{what} is not installed")
    doc = _run_smoke(
        tmp_path, "--source", "dicomweb", "--rtt-ms", "20", "--tasks", "prefetch,dask"
    )
    (section,) = doc["sections"]
    summary = section["summary"]
    assert _no_errors(summary, "dicomslide", "prefetch")["requests_cold"] >= 1
    assert _no_errors(summary, "dask[2 processes]", "dask")["cold_s"]
    assert summary["server-limit"]["server"]["level_frames_per_s"]
    proxy = section["results"]["proxy"]
    assert proxy["requests"] > 0
    assert proxy["upstream_refused"] == 0
    assert section["results"]["server_events"] == []
    assert "Delay proxy:" in (tmp_path / "RESULTS.md").read_text()


# --- the delay proxy ---------------------------------------------------------------------


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"_benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


delay_proxy = _load("delay_proxy")

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


class KeepAliveServer(LoopServer):
    """HTTP/1.1 on 127.0.0.1: 'ok' to every request; closes a connection ``idle`` s after a
    response when no new request came (as Orthanc 1.10 does after 1 s)."""

    def __init__(self, idle: float) -> None:
        super().__init__(max_lifetime=600.0, thread_name="keep-alive-server")
        self.idle = idle
        self.requests = 0
        self.connections = 0
        self.port = 0
        self.start()

    async def _listen(self) -> list[asyncio.Server]:
        server = await asyncio.start_server(self._tracked(self._serve), "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return [server]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        timeout = 5.0  # the first request; `idle` between requests
        try:
            while True:
                try:
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
                except (TimeoutError, asyncio.IncompleteReadError):
                    return
                self.requests += 1
                writer.write(RESPONSE)
                await writer.drain()
                timeout = self.idle
        except OSError:
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self.stop()


def test_delay_proxy_adds_the_round_trip_and_keeps_connections_alive() -> None:
    server = KeepAliveServer(idle=5.0)
    try:
        with delay_proxy.DelayProxy(("127.0.0.1", server.port), rtt_ms=100) as proxy:
            with httpx.Client(trust_env=False, timeout=10) as client:
                for _ in range(3):
                    t0 = time.perf_counter()
                    assert client.get(f"http://127.0.0.1:{proxy.port}/x").text == "ok"
                    assert time.perf_counter() - t0 >= 0.095
            counters = proxy.snapshot()
    finally:
        server.close()
    assert counters["requests"] == 3
    assert counters["connections"] == 1
    assert server.connections == 1


def test_delay_proxy_delivers_the_server_close_and_never_forwards_late_requests() -> None:
    # One-way delay 0.2 s; the server closes 0.05 s after answering. The client's second
    # request leaves after the response arrives but before the close does: on a real path
    # it meets a closed socket, so the server must never see it and the client gets the close.
    server = KeepAliveServer(idle=0.05)
    request = b"GET /x HTTP/1.1\r\nHost: test\r\n\r\n"
    try:
        with delay_proxy.DelayProxy(("127.0.0.1", server.port), rtt_ms=400) as proxy:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
                sock.sendall(request)
                got = b""
                while not got.endswith(b"ok"):
                    chunk = sock.recv(4096)
                    assert chunk, got
                    got += chunk
                sock.sendall(request)
                t0 = time.perf_counter()
                try:
                    rest = sock.recv(4096)
                except ConnectionResetError:
                    rest = b""
                waited = time.perf_counter() - t0
            time.sleep(0.5)  # the late request's due time has passed
            counters = proxy.snapshot()
    finally:
        server.close()
    assert rest == b""
    assert waited < 1.0
    assert server.requests == 1
    assert counters["requests"] == 2  # counted on arrival at the proxy
    assert counters["upstream_closed_first"] == 1
    assert counters["late_bytes_dropped"] == len(request)


def test_delay_proxy_resets_the_client_when_the_server_is_down() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    with delay_proxy.DelayProxy(("127.0.0.1", port), rtt_ms=40) as proxy:
        with pytest.raises(httpx.ReadError, match="reset"):
            httpx.get(f"http://127.0.0.1:{proxy.port}/x", trust_env=False, timeout=5)
        counters = proxy.snapshot()
    assert counters["upstream_refused"] == 1


def test_delay_proxy_stops_quietly_with_open_connections(caplog: pytest.LogCaptureFixture) -> None:
    # Before the server starts: its own event loop logs (at DEBUG) when it is created.
    caplog.set_level(logging.ERROR, logger="asyncio")
    server = KeepAliveServer(idle=5.0)
    try:
        proxy = delay_proxy.DelayProxy(("127.0.0.1", server.port), rtt_ms=20).start()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: test\r\n\r\n")
            assert sock.recv(4096).endswith(b"ok")
            proxy.stop()
    finally:
        server.close()
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
