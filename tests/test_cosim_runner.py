"""The co-simulation runner and bench, on a small behavioural ``bchw_top``.

The DUT sums each image's pixels ``S``; class = ``(S + rom[0]) % NUM_CLASSES``,
score ``i`` = ``S * (i + 1)`` wrapped to SCORE_BITS (two's complement), with
``rom`` loaded by ``$readmemh("tweak.hex")``. Bugs on purpose, without a
rebuild: ``rom[1]`` bit 0 withholds every result (a deadlock), bit 1 makes
reset leave a half-summed image in the accumulator. It reads one beat per clock while its input
register is free, then computes for DELAY cycles; that gives latency
``B + DELAY + 1`` and interval ``B + 1`` for ``B`` beats per image.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bchw.cosim import runner
from bchw.cosim.beats import check_io, pack_image, pack_output, unpack_output
from bchw.errors import BchwError

IO = {"n_in": 13, "in_lanes": 4, "in_beats": 4, "class_bits": 2, "score_bits": 6,
      "num_classes": 3}
DELAY = 3
N_IMAGES = 10

DUT = """\
module bchw_top (
    input  wire clk,
    input  wire rst,
    input  wire [{in_w}-1:0] s_axis_tdata,
    input  wire s_axis_tvalid,
    output wire s_axis_tready,
    input  wire s_axis_tlast,
    output wire [{out_w}-1:0] m_axis_tdata,
    output wire m_axis_tvalid,
    input  wire m_axis_tready,
    output wire m_axis_tlast
);
    reg [7:0] rom [0:1];
    initial $readmemh("tweak.hex", rom);

    reg [31:0] acc, a_sum, c_sum;
    reg a_valid, c_busy, m_valid;
    reg [7:0] c_cnt;
    reg [{out_w}-1:0] m_data;
    wire [31:0] beat_sum = {beat_sum};
    wire [31:0] cls = (c_sum + rom[0]) % {num_classes};

    assign s_axis_tready = !a_valid;
    assign m_axis_tvalid = m_valid;
    assign m_axis_tdata = m_data;
    assign m_axis_tlast = m_valid;

    always @(posedge clk) begin
        if (rst) begin
            if (!rom[1][1])
                acc <= 0;
            a_valid <= 0;
            c_busy <= 0;
            m_valid <= 0;
        end else begin
            if (s_axis_tvalid && s_axis_tready) begin
                if (s_axis_tlast) begin
                    a_sum <= acc + beat_sum;
                    a_valid <= 1;
                    acc <= 0;
                end else
                    acc <= acc + beat_sum;
            end
            if (m_valid && m_axis_tready)
                m_valid <= 0;
            if (a_valid && !c_busy) begin
                c_busy <= 1;
                c_cnt <= {delay} - 1;
                c_sum <= a_sum;
                a_valid <= 0;
            end else if (c_busy) begin
                if (c_cnt != 0)
                    c_cnt <= c_cnt - 1;
                else if ((!m_valid || m_axis_tready) && !rom[1][0]) begin
                    m_valid <= 1;
                    m_data <= {{{scores}, cls[{class_bits}-1:0]}};
                    c_busy <= 0;
                end
            end
        end
    end
endmodule
"""


STALL, KEEP_ACC_ON_RESET = 1, 2


def write_dut(rtl_dir: Path) -> Path:
    rtl_dir.mkdir(parents=True, exist_ok=True)
    lanes = " + ".join(f"s_axis_tdata[{8 * k + 7}:{8 * k}]" for k in range(IO["in_lanes"]))
    scores = ", ".join(f"{IO['score_bits']}'(c_sum * {i + 1})"
                       for i in reversed(range(IO["num_classes"])))
    (rtl_dir / "bchw_top.v").write_text(DUT.format(
        in_w=8 * IO["in_lanes"], out_w=IO["class_bits"] + IO["num_classes"] * IO["score_bits"],
        beat_sum=lanes, num_classes=IO["num_classes"], delay=DELAY, scores=scores,
        class_bits=IO["class_bits"]))
    write_tweak(rtl_dir)
    return rtl_dir


def write_tweak(rtl_dir: Path, bias: int = 0, bugs: int = 0) -> None:
    (rtl_dir / "tweak.hex").write_text(f"{bias:02x}\n{bugs:02x}\n")


def with_tweak(rtl: Path, to: Path, **tweak) -> Path:
    """A copy of the RTL directory with another hex file: same Verilog, same build."""
    shutil.copytree(rtl, to)
    write_tweak(to, **tweak)
    return to


def expected(images: np.ndarray, bias: int = 0) -> tuple[np.ndarray, np.ndarray]:
    sums = images.astype(np.int64).sum(axis=1)
    bits = IO["score_bits"]
    raw = (sums[:, None] * np.arange(1, IO["num_classes"] + 1)) & ((1 << bits) - 1)
    scores = np.where(raw >= 1 << (bits - 1), raw - (1 << bits), raw)
    return (sums + bias) % IO["num_classes"], scores


def model_timing(n: int) -> dict:
    beats = IO["in_beats"]
    latency, interval = beats + DELAY + 1, beats + 1
    return {"latency": latency, "interval": interval,
            "output_cycles": [latency + k * interval for k in range(n)]}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, size=(N_IMAGES, IO["n_in"]), dtype=np.uint8)


@pytest.fixture(scope="module")
def rtl(tmp_path_factory) -> Path:
    return write_dut(tmp_path_factory.mktemp("rtl"))


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sim_build")


SIMULATORS = pytest.mark.parametrize("simulator", ["icarus", "verilator"])


def run(rtl: Path, images: np.ndarray, simulator: str, build_dir: Path, **kwargs) -> dict:
    classes, scores = expected(images, kwargs.pop("bias", 0))
    return runner.run(rtl, images, IO, kwargs.pop("classes", classes),
                      kwargs.pop("scores", scores), kwargs.pop("timing", model_timing(len(images))),
                      simulator=simulator, build_dir=build_dir, **kwargs)


@SIMULATORS
def test_matching_dut_passes_every_phase(rtl, images, simulator, build_dir):
    labels = expected(images)[0]
    labels[0] = (labels[0] + 1) % IO["num_classes"]
    result = run(rtl, images, simulator, build_dir, seed=3, labels=labels)
    assert result["mismatches"] == 0, result["first_mismatch"]
    assert result["first_mismatch"] is None
    assert result["cycles_match"], result["first_cycle_mismatch"]
    assert result["latency_cycles_measured"] == model_timing(1)["latency"]
    assert result["interval_cycles_measured"] == result["interval_cycles_model"]
    assert result["interval_match"]
    assert result["reset_ok"]
    assert not result["deadlock"]
    assert result["tlast_missing"] == 0
    assert result["accuracy"] == pytest.approx(1 - 1 / N_IMAGES)
    assert result["sim_cycles"] > N_IMAGES * model_timing(1)["interval"]


@SIMULATORS
def test_wrong_score_and_wrong_timing_are_reported(rtl, images, simulator, build_dir):
    classes, scores = expected(images)
    scores[4, 2] += 1
    timing = model_timing(len(images))
    timing["output_cycles"][6] += 1
    result = run(rtl, images, simulator, build_dir, scores=scores, timing=timing,
                 phases=("timing", "stress"))
    # Image 4 is wrong in the back-to-back timing run and in the stress run.
    assert result["mismatches"] == 2
    first = result["first_mismatch"]
    assert (first["image"], first["phase"]) == (4, "timing")
    assert first["got"]["scores"][2] == first["expected"]["scores"][2] - 1
    assert not result["cycles_match"]
    assert result["first_cycle_mismatch"] == {
        "image": 6, "model": timing["output_cycles"][6], "measured": timing["output_cycles"][6] - 1}
    assert result["reset_ok"] is None


@SIMULATORS
def test_hex_edit_takes_effect_without_rebuild(rtl, images, simulator, build_dir, tmp_path):
    edited = with_tweak(rtl, tmp_path / "rtl", bias=0)
    before = run(edited, images, simulator, build_dir, phases=("stress",))
    assert before["mismatches"] == 0, before["first_mismatch"]
    write_tweak(edited, bias=1)
    after = run(edited, images, simulator, build_dir, bias=1, phases=("stress",), p_gap=0.5,
                p_bp=0.5)
    assert after["mismatches"] == 0, after["first_mismatch"]
    assert after["build_dir"] == before["build_dir"]


def test_verilator_build_keeps_the_executable_not_its_intermediates(rtl, images, build_dir):
    result = run(rtl, images[:2], "verilator", build_dir, phases=("stress",))
    assert result["mismatches"] == 0, result["first_mismatch"]
    files = [p for p in Path(result["build_dir"]).iterdir() if p.is_file()]
    names = {p.name for p in files}
    assert runner.TOPLEVEL in names and runner.BUILD_STAMP in names
    assert not [n for n in names if Path(n).suffix in runner.VERILATOR_INTERMEDIATES]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20


@SIMULATORS
def test_stalled_dut_is_a_deadlock_not_a_hang(rtl, images, simulator, build_dir, tmp_path):
    stalled = with_tweak(rtl, tmp_path / "rtl", bugs=STALL)
    result = run(stalled, images[:3], simulator, build_dir, timeout_cycles=500)
    assert result["deadlock"]
    assert result["mismatches"] == 1 + 3 + 3  # timing (alone, back to back), stress
    assert result["first_mismatch"]["got"] is None
    assert not result["cycles_match"]
    assert not result["reset_ok"]


@SIMULATORS
def test_state_left_by_a_mid_stream_reset_is_caught(rtl, images, simulator, build_dir, tmp_path):
    leaky = with_tweak(rtl, tmp_path / "rtl", bugs=KEEP_ACC_ON_RESET)
    result = run(leaky, images, simulator, build_dir, phases=("reset",))
    assert result["reset_ok"] is False
    assert not result["deadlock"]


def test_icarus_waves_land_in_the_run_directory(rtl, images, build_dir):
    result = run(rtl, images[:2], "icarus", build_dir, phases=("timing",), waves=True)
    assert result["cycles_match"]
    assert Path(result["waves"]).parent == Path(result["run_dir"])
    assert Path(result["waves"]).stat().st_size > 0


def test_beats_put_pixel_k_in_lane_k_mod_lanes():
    image = np.arange(1, 11, dtype=np.uint8)
    assert pack_image(image, 4) == [0x04030201, 0x08070605, 0x00000a09]
    io = check_io(IO)
    word = pack_output(2, [-32, 31, -1], io)
    assert word & 0b11 == 2
    assert unpack_output(word, io) == (2, [-32, 31, -1])


def test_bad_arguments_name_the_field(rtl, images, build_dir):
    with pytest.raises(BchwError, match="in_beats"):
        check_io(IO | {"in_beats": 3})
    with pytest.raises(BchwError, match="images"):
        run(rtl, images[:, :-1], "icarus", build_dir)
    with pytest.raises(BchwError, match="output_cycles"):
        run(rtl, images, "icarus", build_dir, timing=model_timing(2))


def test_missing_hex_file_is_named(rtl, images, build_dir, tmp_path):
    broken = with_tweak(rtl, tmp_path / "rtl")
    (broken / "tweak.hex").unlink()
    with pytest.raises(BchwError, match="tweak.hex"):
        run(broken, images, "icarus", build_dir)


def test_missing_simulator_says_what_to_install(rtl, images, build_dir, monkeypatch):
    monkeypatch.setattr(runner.shutil, "which", lambda tool: None)
    with pytest.raises(BchwError, match="install"):
        run(rtl, images, "icarus", build_dir)
