"""Skipping (or, on CI, failing) tests whose system packages are missing."""

from __future__ import annotations

import os

import pytest


def require(available: object, what: str) -> None:
    """Skip the calling test when ``available`` is falsy; fail instead when CI is set.

    Parameters
    ----------
    available: object
        What a ``find_*`` helper returned (a path, or None)
    what: str
        What is missing, for the message
    """
    if available:
        return
    message = f"{what} is not installed (run .ci/install-system.sh)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; it is required when CI is set", pytrace=False)
    pytest.skip(message)
