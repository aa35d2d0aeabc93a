"""The state an :class:`~dicomslide.sources.local_index.IndexStore` keeps across threads."""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dicomslide.sources import local_index
from dicomslide.sources.local_index import IndexedInstance, IndexStore


@pytest.fixture
def switching() -> Iterator[None]:
    # Threads switch as often as the interpreter allows, so that a race shows every time.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def _instance(rel: str) -> IndexedInstance:
    return IndexedInstance(rel, f"/slides/{rel}", (1, 2, 3, 4), {}, None, ("1", "2", "3"))


def test_fresh_headers_are_handed_out_once_to_threads_asking_at_once(
    switching: None,
) -> None:
    store = IndexStore(None, None, set(), {})
    count = 20_000
    store._fresh = {f"f{i}": ((1, 2, 3, 4), f"h{i}".encode()) for i in range(count)}
    instances = [_instance(f"f{i}") for i in range(count)]
    answers: list[dict[str, bytes]] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            answers.append(store.headers(instances))
        except BaseException as exc:  # what the race raised, reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    handed = [rel for answer in answers for rel in answer]
    assert sorted(handed) == sorted(f"f{i}" for i in range(count))  # each exactly once
    assert all(answer[rel] == f"h{rel[1:]}".encode() for answer in answers for rel in answer)


def test_a_write_that_fails_with_any_error_leaves_the_store_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: Any) -> None:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    monkeypatch.setattr(local_index, "_save_entries", fail)
    conn = sqlite3.connect(tmp_path / "x.sqlite", check_same_thread=False, isolation_level=None)
    store = IndexStore(tmp_path / "x.sqlite", conn, set(), {})
    store.save_later([], [], None)
    assert store._saving is not None
    store._saving.join()
    assert store.save_error == "OverflowError: Python int too large to convert to SQLite INTEGER"
    instance = _instance("a")
    store.remember_frame_table(instance, np.zeros(3, np.int64), np.ones(3, np.int64))
    assert store._later_tables == []  # not queued behind a write that is over
    assert store.frame_table(instance) is None
    store.close()
