"""Comparing per-frame positions read by different paths."""

from __future__ import annotations

from typing import Any

import numpy as np


def assert_same_positions(actual: Any, expected: Any) -> None:
    """Assert that two per-frame position tables (``dicomslide.perframe``) agree field by field.

    Parameters
    ----------
    actual: dicomslide.perframe.FramePositions | None
        Positions under test; None fails
    expected: dicomslide.perframe.FramePositions
        Reference positions (pydicom's parse of the sequence)
    """
    assert actual is not None
    np.testing.assert_array_equal(actual.rows, expected.rows)
    np.testing.assert_array_equal(actual.columns, expected.columns)
    assert actual.z == expected.z
    assert actual.optical_paths == expected.optical_paths
    assert actual.segments == expected.segments
