"""The resource model of convolutional networks: engines and argmax as fitted, plus the sliding
windows, max pools and flattener (costs fitted to each unit synthesised alone, see
bchw.perf.CONV_LUTS_PER_BIT and bench/conv_units.py); multilayer perceptrons' estimates exactly
as they were."""

from pathlib import Path

import pytest

from bchw import perf, randnet
from bchw.export import HardwareConfig, export_state, load_bundle
from bchw.gateware.assembler import InputAssembler
from bchw.gateware.pool import MaxPool
from bchw.gateware.window import SlidingWindow
from bchw.perf import Resources

ROOT = Path(__file__).resolve().parent.parent

#: resource_model of multilayer perceptrons as recorded before convolutions were costed
#: (updated for the skid buffers of engines of SF ≥ 2, the refit of their costs, the
#: copies of the enables of wide registers, and the engines' input memories and the
#: refit with them, the third weight-ROM register, the copies of the parameter ROMs'
#: address and their second register, the multipliers' operand registers (a deeper
#: pipeline: larger skid buffers), the shared requantizers, the input slice's copies
#: and the refit with them, the input memories' parts and registered write ports, the
#: accumulators' copies of their flags, the drain's load copies a PE's item, yosys's
#: block RAM cost for ROMs (rows of a deep ROM side by side in one block), the input
#: slice's copies in two levels and the products registered in the fabric, the fourth
#: weight-ROM register (a deeper pipeline: larger skid buffers), each skid slot's copies
#: of the count and the group's valid, the drain's load copies a sum and its parameters
#: apart, the argmax's comparisons in halves, an input memory's copies of its ready, the
#: requantizers' clamp masks, the weight ROMs' own address registers, the input memories'
#: last-beat flags, the argmax's skid register, the skid slots' choices in parts, and the
#: refit with the folding search's present foldings, and deep block RAM ROMs read in rows
#: registered apart (perf.rom_rows).
MLP_RECORDED = {
    "digits-mlp": Resources(9212, 14368, 0, 4),
    "fmnist-mlp256": Resources(34890, 53597, 36, 5),
    "fmnist-mlp1024": Resources(46326, 89025, 179, 8),
}
RANDOM_MLP_RECORDED = [
    ([64, 64, 32, 10], [4, 4, 10], [4, 8, 16], 5, Resources(9289, 13863, 1, 7)),
    ([100, 30, 10], [3, 10], [7, 5], 1, Resources(4455, 7500, 1, 3)),
]

# spec, input shape, PE, SIMD: line buffers and row memories in LUT RAM (the first), in block
# RAM (the second: 512 pixels a row); kernels 3 and 1; a pooling and a plain last convolution
CONV_NETS = {
    "lutram": ("4C3-MP2-6C3-5FC-3", (2, 6, 6), [3, 5, 3, 2], [5, 7, 11, 3]),
    "bram": ("2C3-MP2-3C1-3", (2, 2, 512), [2, 3, 1], [6, 2, 64]),
}


@pytest.mark.parametrize("name", MLP_RECORDED)
def test_reference_mlp_estimates_are_unchanged(name):
    bundle = load_bundle(ROOT / "models" / name / "bundle")
    assert perf.resource_model(bundle) == MLP_RECORDED[name]
    first = bundle.layers[0]
    assembler = not perf.beats_into_engine(first.in_features, first.simd,
                                           bundle.io["in_lanes"])
    units = {"argmax", "assembler"} if assembler else {"argmax"}
    assert set(perf.resource_breakdown(bundle)) == units | {
        f"engine{i}" for i in range(len(bundle.layers))}


@pytest.mark.parametrize("sizes, pe, simd, seed, recorded", RANDOM_MLP_RECORDED)
def test_random_mlp_estimates_are_unchanged(tmp_path, sizes, pe, simd, seed, recorded):
    bundle = export_state(randnet.random_state(sizes, seed=seed), tmp_path / "bundle",
                          HardwareConfig(pe=pe, simd=simd), formats=("hex",))
    assert perf.resource_model(bundle) == recorded


@pytest.mark.parametrize("lanes, memory", [(7, True), (1, True), (3, False)])
def test_an_input_assembler_only_where_the_lanes_do_not_divide_simd(tmp_path, lanes, memory):
    bundle = export_state(randnet.random_state([100, 30, 10], seed=1), tmp_path / "bundle",
                          HardwareConfig(pe=[3, 10], simd=[7, 5], in_lanes=lanes),
                          formats=("hex",))
    parts = perf.resource_breakdown(bundle)
    la = bundle.layers[0]
    engine = perf.engine_resources(la.in_features, la.out_features, la.in_bits, la.pe,
                                   la.simd, la.widths, lanes if memory else 0)
    assert parts["engine0"] == engine
    assert parts.get("assembler") == (None if memory else perf.assembler_resources(100, lanes))
    if memory:   # the input memory replaces the input buffer and the assembler's register
        plain = perf.engine_resources(la.in_features, la.out_features, la.in_bits, la.pe,
                                      la.simd, la.widths)
        assert engine.ffs < plain.ffs and engine.luts < plain.luts


def test_rams_go_where_yosys_costs_them_less():
    # 32 × 48 bits: 24 DPR16X4 (cost 96) against 2 blocks of 512 × 36 (cost 256): LUT RAM,
    # 6 LUT4s a cell, a read register, a 2:1 multiplexer a bit for the second 16 words
    assert perf.ram_resources(48, 32) == Resources(24 * 6 + 48, 48, 0, 0)
    assert perf.ram_resources(4, 8) == Resources(6, 4, 0, 0)
    # 512 × 32 bits: 1 block (cost 128) against 256 cells (cost 1024)
    assert perf.ram_resources(32, 512) == Resources(0, 0, 1, 0)
    # 8 × 8192 bits (the paper's last line buffer): 228 blocks against 2048 cells
    assert perf.ram_resources(8192, 8).brams == 0
    assert perf.ram_resources(0, 16) == Resources(0, 0, 0, 0)


def _counter(*lengths):
    bits = sum(max(0, (n - 1).bit_length()) for n in lengths)
    return Resources(round(perf.COUNTER_LUTS_PER_BIT * bits), bits + 1, 0, 0)


def _luts(unit, bits):
    """The LUTs of a unit's ``bits`` register bits at its fitted cost per bit."""
    return round(perf.CONV_LUTS_PER_BIT[unit] * bits)


def _expected_parts(bundle):
    """The units of a convolutional network as the test reads them off the gateware: the
    register widths from each unit's stream signature, the memory shapes from its
    documented storage."""
    parts = {"argmax": perf.argmax_resources(bundle.num_classes, bundle.io["score_bits"])}
    previous = None
    for la in bundle.layers:
        if la.kind == "conv":
            c, h, w = la.in_shape
            k, p = la.kernel, (la.kernel - 1) // 2
            unit = SlidingWindow(c, h, w, k, la.in_bits)
            window_bits = unit.m.payload.shape().width          # k·k·C·bits
            older = window_bits // k * (k - 1)                   # k − 1 older columns
            line = perf.ram_resources((k - 1) * c * la.in_bits, w)
            parts[f"window{la.index}"] = (line + Resources(_luts("window", window_bits),
                                                           older + window_bits, 0, 0)
                                          + _counter(h + p, w + p))
        elif previous is not None and previous.kind == "conv":
            c, h, w = previous.out_shape
            unit = InputAssembler(h * w * c, c, previous.widths.out_bits)
            vector = unit.m.payload.shape().width      # pixels shift into it: held once
            copies = -(-vector // perf.FANOUT_BITS)    # its enable, a copy a part
            parts["flatten"] = (Resources(_luts("flatten", vector) + copies, vector + copies, 0, 0)
                                + _counter(h * w))
        parts[f"engine{la.index}"] = perf.engine_resources(la.in_features, la.out_features,
                                                           la.in_bits, la.pe, la.simd, la.widths)
        if la.kind == "conv" and la.pool:
            c, h, w = la.out_features, la.in_shape[1], la.in_shape[2]
            unit = MaxPool(c, h, w, la.pool, la.widths.out_bits, [False] * c)
            pixel = unit.m.payload.shape().width
            parts[f"pool{la.index}"] = (perf.ram_resources(pixel, w // la.pool)
                                        + Resources(_luts("pool", pixel), 2 * pixel, 0, 0)
                                        + _counter(la.pool, la.pool, w // la.pool))
        previous = la
    return parts


@pytest.mark.parametrize("name", CONV_NETS)
def test_conv_estimate_is_the_sum_of_its_units(tmp_path, name):
    spec, shape, pe, simd = CONV_NETS[name]
    state = randnet.random_cnn_state(spec, shape, seed=3)
    bundle = export_state(state, tmp_path / "bundle", HardwareConfig(pe=pe, simd=simd),
                          formats=("hex",))
    parts = perf.resource_breakdown(bundle)
    assert parts == _expected_parts(bundle)
    total = Resources(0, 0, 0, 0)
    for part in parts.values():
        total += part
    assert perf.resource_model(bundle) == total
    # the conv units are on top of the engines and the argmax, never instead
    engines = Resources(0, 0, 0, 0)
    for key, part in parts.items():
        if key.startswith("engine") or key == "argmax":
            engines += part
    extra = [total.luts - engines.luts, total.ffs - engines.ffs, total.brams - engines.brams]
    assert min(extra) >= 0 and extra[1] > 0 and total.dsps == engines.dsps
    if name == "bram":
        # the 512-pixel rows: the line buffer and the row memory each in one block
        assert parts["window0"].brams == 1 and parts["pool0"].brams == 1
        assert parts["window1"].brams == 0        # a 1×1 kernel keeps no rows
    else:
        assert all(part.brams == 0 for key, part in parts.items() if not key.startswith("eng"))


@pytest.mark.parametrize("width, depth, brams", [
    (128, 40, 4), (128, 48, 4), (64, 48, 2), (256, 64, 8),    # ties: block RAM, as yosys
    (128, 28, 0), (128, 20, 0), (256, 20, 0), (128, 128, 4),  # (bench/conv_units.py)
])
def test_ram_choice_is_yosys_on_the_synthesised_memories(width, depth, brams):
    assert perf.ram_resources(width, depth).brams == brams
