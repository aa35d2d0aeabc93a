"""Bounds every hostile case: wall clock, peak RSS and no secret in any text.

The peak RSS is the kernel's high-water mark of this process (``VmHWM``), reset before each
case through ``/proc/self/clear_refs``; where that is not possible the RSS bound is not
checked and the case says so in the summary. Log records of every logger are captured at
DEBUG, so httpx's and httpcore's traces are part of the checked text.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.hostile.server import HostileServer

TOKEN = "tok-HOSTILE-9931"
PASSWORD = "pw-HOSTILE-5521"
API_KEY = "key-HOSTILE-7730"
BASIC = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
SECRETS = (TOKEN, PASSWORD, API_KEY, BASIC)
RSS_BOUND = 1 << 30
#: Case name -> (seconds, peak RSS bytes or None).
MEASURED: dict[str, tuple[float, int | None]] = {}


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class Bound:
    """What a case promises: its wall-clock bound, and the texts it saw (checked for secrets)."""

    seconds: float = 10.0
    texts: list[str] = field(default_factory=list)

    def saw(self, exc: BaseException) -> None:
        """Remember ``str`` and ``repr`` of an exception and of everything chained to it."""
        seen: set[int] = set()
        todo: list[BaseException | None] = [exc]
        while todo:
            current = todo.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            self.texts += [str(current), repr(current), str(getattr(current, "url", ""))]
            todo += [current.__cause__, current.__context__]


@pytest.fixture(scope="session")
def hostile() -> Iterator[HostileServer]:
    """One hostile server for the module; each case installs its own routes."""
    server = HostileServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bounded(
    hostile: HostileServer, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> Iterator[Bound]:
    """Routes reset, logs at DEBUG; afterwards time, peak RSS and secrets are checked."""
    hostile.reset()
    bound = Bound()
    with caplog.at_level(logging.DEBUG):
        for name in ("", "httpx", "httpcore", "dicomslide", "asyncio"):
            caplog.set_level(logging.DEBUG, logger=name)
        resettable = _reset_peak_rss()
        start = time.monotonic()
        yield bound
        elapsed = time.monotonic() - start
        peak = _peak_rss() if resettable else None
        MEASURED[request.node.name] = (elapsed, peak)
        texts = bound.texts + [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert elapsed < bound.seconds, f"took {elapsed:.1f} s, bound {bound.seconds} s"
    if peak is not None:
        assert peak < RSS_BOUND, f"peak RSS {peak / 2**20:.0f} MiB"
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, text[:500]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print how many hostile cases ran, and their slowest time and largest peak RSS."""
    if not MEASURED:
        return
    slowest = max(MEASURED.items(), key=lambda kv: kv[1][0])
    peaks = [(name, p) for name, (_, p) in MEASURED.items() if p is not None]
    line = f"hostile cases: {len(MEASURED)}; slowest {slowest[0]} {slowest[1][0]:.1f} s"
    if peaks:
        name, peak = max(peaks, key=lambda kv: kv[1])
        line += f"; largest peak RSS {name} {peak / 2**20:.0f} MiB"
    terminalreporter.write_line(line)
