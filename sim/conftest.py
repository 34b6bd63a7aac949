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


def check_cosim(r: dict) -> None:
    """A co-simulation result is clean: bit-exact, cycle-exact, reset recovered, no deadlock."""
    assert r["mismatches"] == 0, r["first_mismatch"]
    assert r["cycles_match"] and r["stress_cycles_match"], r["first_cycle_mismatch"]
    assert r["latency_cycles_measured"] == r["latency_cycles_model"]
    assert r["interval_cycles_measured"] == r["interval_cycles_model"]
    assert r["reset_ok"] and not r["deadlock"]
