"""Co-simulation of the generated Verilog: shared build directory for both simulators."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def build_dir() -> Path:
    """Simulator builds, cached by Verilog content (safe across pytest-xdist workers)."""
    path = ROOT / "sim_build"
    path.mkdir(exist_ok=True)
    return path
