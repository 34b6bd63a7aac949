"""Shared fixtures: small random bundles exported the way users export theirs."""

from __future__ import annotations

import pytest

from bchw import randnet
from bchw.export import HardwareConfig, export_state


@pytest.fixture
def small_bundle(tmp_path):
    """A 3-layer random network with foldings that don't divide its sizes."""
    state = randnet.random_state([20, 13, 7, 5], act_bits=4, seed=1)
    hw = HardwareConfig(pe=[4, 3, 5], simd=[6, 4, 7], in_lanes=6)
    return export_state(state, tmp_path / "bundle", hw)
