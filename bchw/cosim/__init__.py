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
    # the bench sends pixels in the order the hardware takes them (HWC for a CNN)
    pixels = golden.input_pixels(bundle, images).astype(np.uint8)
    model = perf.cycle_model(bundle)
    _, out_cycles = model.stream(len(images))
    gaps, draw = stress_stimulus(seed, p_gap, p_bp, len(images) * bundle.io["in_beats"])
    _, stress_cycles = model.stream(len(images), in_gaps=gaps, out_draw=draw)
    timing = {"latency": model.latency, "interval": model.interval,
              "output_cycles": out_cycles, "stress_output_cycles": stress_cycles}
    result = runner.run(rtl_dir, pixels, bundle.io, gold.classes, gold.scores, timing,
                        simulator=simulator, build_dir=build_dir, seed=seed, waves=waves,
                        labels=labels, p_gap=p_gap, p_bp=p_bp)
    result["golden_classes"] = gold.classes
    if result["first_mismatch"] is not None:
        k = result["first_mismatch"]["image"]
        result["first_mismatch"].update(localize(bundle, rtl_dir, images[k], simulator,
                                                 build_dir=build_dir))
    return result


def localize(bundle, rtl_dir: Path, image: np.ndarray, simulator: str, *,
             build_dir: str | None = None) -> dict:
    """The first layer and neuron where the RTL and the golden model part, for one image.

    Builds the debug variant of the Verilog (per-layer output taps) with the
    hex images of ``rtl_dir``, runs the image, and compares every layer's
    output vector with the golden model's.
    """
    import shutil
    import tempfile

    from bchw import golden
    from bchw.cosim import runner
    from bchw.gateware.top import write_verilog

    if bundle.has_conv:
        return {"layer": None, "neuron": None,
                "note": "per-layer localisation covers fully connected bundles only"}
    image = np.asarray(image, dtype=np.uint8).reshape(1, -1)
    gold = golden.infer(bundle, image)
    taps = [{"n": la.out_features, "bits": la.widths.out_bits, "signed": la.widths.out_signed}
            for la in bundle.layers]
    with tempfile.TemporaryDirectory(prefix="bchw-debug-") as tmp:
        debug_rtl = write_verilog(bundle, Path(tmp) / "rtl", debug=True)
        for hex_file in Path(rtl_dir).glob("*.hex"):
            shutil.copyfile(hex_file, debug_rtl / hex_file.name)
        r = runner.run(debug_rtl, image, bundle.io, gold.classes, gold.scores,
                       {"latency": 0, "interval": 0, "output_cycles": [0]},
                       simulator=simulator, build_dir=build_dir, phases=("timing",), taps=taps)
    for i, (vectors, want) in enumerate(zip(r["layer_outputs"], gold.layers)):
        got = vectors[0] if vectors else None
        if got is None:
            return {"layer": i, "neuron": None, "note": "no output from this layer"}
        wrong = [j for j, (a, b) in enumerate(zip(got, want[0])) if a != int(b)]
        if wrong:
            j = wrong[0]
            return {"layer": i, "neuron": j, "layer_expected": int(want[0][j]),
                    "layer_got": got[j]}
    return {"layer": None, "neuron": None,
            "note": "every layer agrees: the difference is in the argmax or output stage"}
