"""Checks of user arguments shared by the domain modules (slide, image, OpenSlide layer)."""

from __future__ import annotations

from collections.abc import Sequence

from dicomslide.errors import RegionError

__all__ = ["int_pair"]


def int_pair(value: Sequence[int], what: str) -> tuple[int, int]:
    """Two integers from a user's pair (offset, size, location).

    Parameters
    ----------
    value: Sequence[int]
        What the user gave
    what: str
        Name of the argument, for the error message

    Returns
    -------
    tuple[int, int]
        The pair as Python integers

    Raises
    ------
    dicomslide.RegionError
        If ``value`` is not two integer-like values
    """
    try:
        a, b = value
        return int(a), int(b)
    except (TypeError, ValueError):
        raise RegionError(f"{what} must be a pair of integers, got {value!r}.") from None
