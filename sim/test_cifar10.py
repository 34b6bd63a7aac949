"""The paper's CIFAR-10 network (3×32×32 images) through the hardware path, on Verilator.

``2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10``, A = 8, random weights
(every third batch-norm scale negative) and random images: export, Verilog,
``verilator --lint-only -Wall``, then co-simulation against the golden model
(every output bit) and the cycle model (every output cycle, back to back and
under seeded random gaps and back-pressure, with a reset in mid-stream).

The suite generates the full network's Verilog and lints it (about 1.5 minutes:
its flattened 4·4·512·8 = 65,536-bit vector is held in registers of 2**15 bits,
bchw.gateware.wide, since Amaranth 0.5 fails on a 2**16-bit cell feeding another
module), and co-simulates the same network at an eighth of its widths
(``2x16C3-MP2-2x32C3-MP2-2x64C3-MP2-2x128FC-10``: the same input, six 3×3
convolutions in pairs, three pools, two hidden fully connected layers): about
two minutes on two cores, a minute of it Verilator's build (bench/cifar10.py
measured 19 s of Verilog, 4 s of lint, 62 s of build without ccache and 43 s for
four images).  The full-width co-simulation is opt-in (``BCHW_CIFAR10_PAPER=1``)
for its time alone: 16 minutes on a loaded two-core machine (Verilog 1 minute,
Verilator build 3, three images of 391,199-cycle intervals through the bench's
phases the rest), bit-exact and cycle-exact.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from bchw import randnet
from bchw.cosim import cosimulate
from bchw.cosim.runner import TOPLEVEL, _verilator_root
from bchw.export import HardwareConfig, export_state
from bchw.gateware.top import write_verilog
from sim.conftest import check_cosim as check

IN_SHAPE = (3, 32, 32)
PAPER = "2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10"
EIGHTH = "2x16C3-MP2-2x32C3-MP2-2x64C3-MP2-2x128FC-10"
#: PE and SIMD per layer, 276 and 2112 adder lanes: every engine has about as much work an
#: image as the busiest (windows × NF·SF ≈ 37k cycles for the eighth, ≈ 295k for the
#: paper's); the cycle model's intervals are 48,983 and 391,199 cycles, as the windows and
#: engines hold each other up.  Fewer lanes would make the cycle model, which simulates a
#: convolutional network cycle by cycle in Python, the slow part of the test.
FOLDINGS = {
    EIGHTH: ([1, 4, 4, 4, 4, 4, 1, 1, 1], [14, 16, 8, 16, 8, 16, 4, 1, 1]),
    PAPER: ([1, 8, 4, 8, 4, 8, 1, 1, 1], [27, 64, 64, 64, 64, 64, 32, 4, 1]),
}
#: Images co-simulated: the reset phase interrupts the third one.
IMAGES = {EIGHTH: 4, PAPER: 3}

#: The warning classes every Verilog that Amaranth writes has, the MLP reference design
#: rtl/bchw_top.v included: initialised ``reg`` s also assigned in processes (PROCASSINIT),
#: unused bits of sliced values (UNUSEDSIGNAL), operands of implicit width in its ``+``,
#: ``==`` and ``!`` (WIDTHEXPAND, WIDTHTRUNC), ``wire [-1:0]`` for counters of one state
#: (ASCRANGE) and submodules named ``bchw_top.x`` in ``bchw_top.v`` (DECLFILENAME).
#: Every other warning, and every error, fails the lint.
LINT_SUPPRESSED = ("ASCRANGE", "DECLFILENAME", "PROCASSINIT", "UNUSEDSIGNAL", "WIDTHEXPAND",
                   "WIDTHTRUNC")


def lint_verilog(rtl_dir: Path) -> subprocess.CompletedProcess:
    """``verilator --lint-only -Wall`` on ``rtl_dir``'s Verilog, :data:`LINT_SUPPRESSED` off."""
    root = _verilator_root()
    sources = sorted(p.name for p in Path(rtl_dir).glob("*.v"))
    return subprocess.run([str(root / "bin" / "verilator"), "--lint-only", "-Wall",
                           *[f"-Wno-{w}" for w in LINT_SUPPRESSED], "--top-module", TOPLEVEL,
                           *sources], cwd=rtl_dir, capture_output=True, text=True,
                          env={**os.environ, "VERILATOR_ROOT": str(root)}, check=False)


def lint_messages(result: subprocess.CompletedProcess) -> list[str]:
    """The warnings and errors (their ``%Class-NAME: file:line`` heads) in a lint's output."""
    return re.findall(r"^%(?:Warning|Error)[^\n]*", result.stdout + result.stderr, re.M)


#: Random images whose batch-norm statistics the random network takes: at full width a
#: forward pass of 512 images was a tenth of the generate-and-lint test's time.
STAT_IMAGES = {EIGHTH: 512, PAPER: 64}


def generate_network(tmp_path: Path, spec: str, seed: int = 0):
    """Export ``spec`` with random weights, write its Verilog and lint it; (bundle, rtl)."""
    pe, simd = FOLDINGS[spec]
    state = randnet.random_cnn_state(spec, IN_SHAPE, seed=seed, stat_images=STAT_IMAGES[spec])
    bundle = export_state(state, tmp_path / "bundle", HardwareConfig(pe=pe, simd=simd),
                          formats=("hex",))
    assert bundle.io["in_lanes"] == 3 and bundle.n_in == 3 * 32 * 32
    rtl = write_verilog(bundle, tmp_path / "rtl")
    lint = lint_verilog(rtl)
    assert lint.returncode == 0 and not lint_messages(lint), lint_messages(lint)[:10]
    return bundle, rtl


def check_network(tmp_path: Path, build_dir: Path, spec: str, seed: int = 0) -> dict:
    bundle, rtl = generate_network(tmp_path, spec, seed)
    images = randnet.random_images(IMAGES[spec], bundle.n_in, seed=seed)
    result = cosimulate(bundle, rtl, images, None, "verilator", seed=seed, build_dir=build_dir)
    check(result)
    return result


def test_cifar10_paper_generates_and_lints(tmp_path):
    bundle, rtl = generate_network(tmp_path, PAPER)
    assert [la.out_features for la in bundle.layers] == [128, 128, 256, 256, 512, 512, 1024,
                                                         1024, 10]
    # the flattened 4·4·512 codes of 8 bits: 65,536 bits, held in registers of 2**15
    assert bundle.layers[6].in_features * bundle.layers[6].in_bits == 1 << 16
    assert "vector_1" in (rtl / "bchw_top.v").read_text()


def test_cifar10_eighth_width(tmp_path, build_dir):
    check_network(tmp_path, build_dir, EIGHTH)


@pytest.mark.skipif(not os.environ.get("BCHW_CIFAR10_PAPER"),
                    reason="the paper's full widths co-simulated take about 16 minutes: set "
                           "BCHW_CIFAR10_PAPER=1")
def test_cifar10_paper(tmp_path, build_dir):
    check_network(tmp_path, build_dir, PAPER)
