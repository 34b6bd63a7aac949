"""Co-simulation of the generated ``bchw_top``: a cocotb bench and its runner.

:func:`bchw.cosim.runner.run` builds the Verilog in Icarus Verilog or
Verilator, streams images through :mod:`bchw.cosim.bench` and compares every
result and every output cycle with the golden and cycle models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def cosimulate(bundle, rtl_dir: Path, images: np.ndarray, labels: np.ndarray | None,
               simulator: str, *, seed: int = 0, waves: bool = False,
               build_dir: str | None = None, p_gap: float = 0.3, p_bp: float = 0.3) -> dict:
    """Golden model, cycle model and RTL on the same images; the runner compares them.

    The cycle model predicts every output cycle of the back-to-back phase and,
    given the bench's own seeded gaps and back-pressure, of the stress phase.
    """
    from bchw import golden, perf
    from bchw.cosim import runner
    from bchw.cosim.bench import stress_stimulus

    gold = golden.infer(bundle, images)
    model = perf.cycle_model(bundle)
    _, out_cycles = model.stream(len(images))
    gaps, draw = stress_stimulus(seed, p_gap, p_bp, len(images) * bundle.io["in_beats"])
    _, stress_cycles = model.stream(len(images), in_gaps=gaps, out_draw=draw)
    timing = {"latency": model.latency, "interval": model.interval,
              "output_cycles": out_cycles, "stress_output_cycles": stress_cycles}
    result = runner.run(rtl_dir, images, bundle.io, gold.classes, gold.scores, timing,
                        simulator=simulator, build_dir=build_dir, seed=seed, waves=waves,
                        labels=labels, p_gap=p_gap, p_bp=p_bp)
    result["golden_classes"] = gold.classes
    return result
