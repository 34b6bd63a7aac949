"""Multiplier in Amaranth's simulator: signed products, ``MUL_STAGES`` enabled cycles later;
and its Verilog, the behaviour against the ECP5 DSP version's structure."""

from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.back import verilog

from bchw.gateware.multiplier import MUL_STAGES, MUL_VERILOG, MUL_VERILOG_ECP5, Multiplier
from bchw.gateware.simtools import always, check_pipeline, random_pattern, simulate


def operands(a_bits: int, b_bits: int, n: int, seed: int) -> list[tuple[int, int]]:
    """Random operands with the four extreme pairs first."""
    rng = np.random.default_rng(seed)
    lo_a, hi_a = -(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1
    lo_b, hi_b = -(1 << (b_bits - 1)), (1 << (b_bits - 1)) - 1
    pairs = [(lo_a, lo_b), (lo_a, hi_b), (hi_a, lo_b), (hi_a, hi_b)]
    pairs += zip(rng.integers(lo_a, hi_a + 1, n).tolist(), rng.integers(lo_b, hi_b + 1, n).tolist())
    return pairs


@pytest.mark.parametrize("a_bits,b_bits", [(18, 18), (2, 18), (18, 12), (22, 18)])
@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_products_of_two_enabled_edges_ago(a_bits, b_bits, rate):
    dut = Multiplier(a_bits, b_bits)
    inputs = operands(a_bits, b_bits, 60, seed=a_bits * b_bits)
    enable = always if rate == 1.0 else random_pattern(rate, seed=5)

    async def testbench(ctx):
        checked = await check_pipeline(ctx, dut.en, [dut.a, dut.b], inputs, dut.p,
                                       [a * b for a, b in inputs], MUL_STAGES, enable=enable)
        assert checked >= 20

    simulate(dut, testbench, cycles=len(inputs) + MUL_STAGES + 10)


def test_instance_names_the_module_and_its_widths():
    text = verilog.convert(Multiplier(17, 18, instance=True), name="top", emit_src=False)
    assert re.search(r"bchw_mul #\(\s*\.A_WIDTH\(32'd17\),\s*\.B_WIDTH\(32'd18\)", text)


def test_both_verilog_versions_are_the_same_module():
    """Same name, parameters and ports; the behaviour registers operands, then the product;
    the ECP5 one uses those registers of the DSP block, enabled by ``en``, not its pipeline
    register (which would be a third stage)."""
    header = MUL_VERILOG[:MUL_VERILOG.index(");") + 2]
    assert header in MUL_VERILOG_ECP5
    assert "a_q <= a;" in MUL_VERILOG and "p_q <= a_q * b_q;" in MUL_VERILOG
    for reg in ("INPUTA", "INPUTB", "OUTPUT"):
        assert f'.REG_{reg}_CLK("CLK0"), .REG_{reg}_CE("CE0")' in MUL_VERILOG_ECP5
    assert '.REG_PIPELINE_CLK("NONE")' in MUL_VERILOG_ECP5 and ".CE0(en)" in MUL_VERILOG_ECP5
    for port, bits in (("A", 18), ("B", 18), ("P", 36)):
        assert len(re.findall(rf"\.{port}\d+\(", MUL_VERILOG_ECP5)) == bits
