"""ICC colour management: real transforms applied, sRGB-equivalent profiles skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicomslide.color import ColorTransform, get_color_transform
from tests.support.icc import srgb_profile, wide_gamut_profile


def test_srgb_profile_is_not_applied() -> None:
    transform = ColorTransform(srgb_profile())
    assert transform.is_identity
    tile = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert transform.apply(tile) is tile


def test_other_profile_changes_colours() -> None:
    transform = ColorTransform(wide_gamut_profile())
    assert not transform.is_identity
    tile = np.zeros((8, 8, 3), dtype=np.uint8)
    tile[..., 0] = 200
    out = transform.apply(tile)
    assert out.shape == tile.shape
    assert np.abs(out.astype(int) - tile.astype(int)).max() > 3


def test_unusable_profiles_give_no_transform() -> None:
    assert get_color_transform(b"") is None
    assert get_color_transform(b"not an icc profile at all") is None


def test_confirmed_srgb_profile_is_remembered_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomslide import color

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    profile = srgb_profile() + b""  # a new bytes object: not in get_color_transform's LRU
    color.get_color_transform.cache_clear()
    transform = color.ColorTransform(profile)
    assert transform.is_identity
    transform._confirm_identity()  # what the background thread does
    assert list((tmp_path / "dicomslide" / "icc").glob("*.srgb-equivalent"))
    color.get_color_transform.cache_clear()
    assert color.get_color_transform(profile) is None
    # a profile that changes colours is never remembered as sRGB
    other = wide_gamut_profile()
    assert color.get_color_transform(other) is not None
    color.get_color_transform.cache_clear()
