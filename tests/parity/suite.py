"""The calls of one parity run: synthetic variants plus derived images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.parity.cases import Variant, calls_for


def build_calls(
    variants: list[Variant], folders: dict[str, Path], work: Path
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    calls: list[dict[str, Any]] = []
    tolerances: dict[str, int] = {}
    for v in variants:
        calls += calls_for(v, folders[v.name])
        if v.lossy:
            tolerances[v.name] = 2
    return calls, tolerances
