"""Rows of a warm index looked up as asked (dicomslide.sources.stored_rows.AsAsked)."""

from __future__ import annotations

import pytest

from dicomslide.sources.stored_rows import AsAsked


def test_a_key_missing_once_is_looked_up_again() -> None:
    # Another process may index the key's file after a first look-up found nothing.
    store: dict[str, int] = {}
    calls: list[str] = []

    def find(key: str) -> int | None:
        calls.append(key)
        return store.get(key)

    mapping = AsAsked(find, lambda: dict(store))
    assert mapping.get("x") is None
    store["x"] = 1
    assert list(mapping.items()) == [("x", 1)]
    assert mapping["x"] == 1  # before: KeyError, the first miss remembered for good
    assert mapping["x"] == 1
    assert calls == ["x", "x"]  # a hit is kept
    assert mapping.known("x") == 1
    with pytest.raises(KeyError):
        mapping["y"]
