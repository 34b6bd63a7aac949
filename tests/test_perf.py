import pytest

from bchw import perf, randnet
from bchw.export import HardwareConfig, export_state
from bchw.perf import ConvTiming, CycleModel, EngineTiming


def _model(in_beats, steps, simd=4, sf=None):
    """Engines of ``steps``, ``sf[i]`` of them a group (default 1: groups collected apart)."""
    return CycleModel(in_beats=in_beats, engines=[
        perf.engine_timing(s, simd, sf=f) for s, f in zip(steps, sf or [1] * len(steps))])


def test_isolated_latency_is_the_sum_of_stages():
    m = _model(4, [10, 7, 3])
    first, out = m.stream(1)
    assert first == [0]
    assert out[0] == m.latency == 4 + sum(s + perf.engine_pipeline(4) for s in [10, 7, 3]) + 1


def test_steady_state_interval_is_the_slowest_stage():
    for beats, steps in ((4, [10, 7, 3]), (12, [5, 9]), (3, [2, 2, 20, 1])):
        m = _model(beats, steps)
        _, out = m.stream(12)
        assert out[-1] - out[-2] == out[-2] - out[-3] == m.interval == max([beats] + steps)


def test_an_engine_of_one_step_hands_on_every_other_cycle():
    # its stall looks at its own registers only, so a one-step engine waits a cycle
    # for its output register to empty; any slower stage hides that
    for beats, steps, want in ((1, [1], 2), (1, [3, 1, 1], 3), (1, [1, 1], 2), (2, [1], 2)):
        m = _model(beats, steps)
        _, out = m.stream(12)
        assert {b - a for a, b in zip(out[-5:], out[-4:])} == {m.interval} == {want}


def test_back_pressure_slows_the_output_and_loses_nothing():
    m = _model(4, [6, 6])
    _, free = m.stream(20)
    _, slow = m.stream(20, out_ready=lambda c: c % 10 == 0)
    assert len(slow) == 20 and all(c % 10 == 0 for c in slow)
    assert slow[-1] > free[-1]


def test_tree_depth():
    assert [perf.tree_depth(s) for s in (1, 2, 3, 4, 5, 16, 17)] == [1, 2, 3, 3, 4, 5, 6]


def test_cycle_model_of_a_bundle(small_bundle):
    m = perf.cycle_model(small_bundle)
    assert [e.steps for e in m.engines] == [la.nf * la.sf for la in small_bundle.layers]
    assert m.in_beats == 4


def test_bench_source_and_sink():
    m = _model(3, [5, 4])
    assert m.stream(6, in_gaps=[0] * 18, out_draw=lambda: True) == m.stream(6)
    # with idle cycles before every beat and an idle pipeline, beats come gap + 1 apart
    first, _ = m.stream(2, in_gaps=[0, 2, 2, 4, 2, 2])
    assert first == [0, 3 + 3 + 5]
    # a sink that is ready every other offered cycle takes outputs no faster than that
    toggle = iter([False, True] * 100)
    _, out = m.stream(6, out_draw=lambda: next(toggle))
    _, free = m.stream(6)
    assert out[0] == free[0] and all(b > a for a, b in zip(free[1:], out[1:]))


# --------------------------------------------------------------------------- convolutions

def _conv_model(convs, steps, fc_steps=(3,), simd=4):
    engines = [EngineTiming(steps=s, pipeline=perf.engine_pipeline(simd),
                            latency=s + perf.engine_pipeline(simd)) for s in [*steps, *fc_steps]]
    return CycleModel(in_beats=convs[0].height * convs[0].width, engines=engines, argmax=2,
                      convs=convs)


def window_period(height, width, kernel):
    """Cycles an image takes a sliding window with every output taken at once
    (:class:`bchw.gateware.window.SlidingWindow`'s docstring)."""
    p = (kernel - 1) // 2
    stalls = height * width if p == 0 else height * (width - 1)
    return (height + p) * (width + p) + stalls


CONV_MODELS = [
    ([ConvTiming(6, 6, 3, 2), ConvTiming(3, 3, 3)], [8, 12], [10, 4]),
    ([ConvTiming(4, 4, 3), ConvTiming(4, 4, 3, 2)], [4, 8], [4]),
    ([ConvTiming(4, 4, 5, 2), ConvTiming(2, 2, 1)], [10, 6], [8]),
    ([ConvTiming(5, 3, 1)], [1], [1, 1]),
]


@pytest.mark.parametrize("convs, steps, fc_steps", CONV_MODELS)
def test_conv_latency_and_interval_are_simulated(convs, steps, fc_steps):
    m = _conv_model(convs, steps, fc_steps)
    first, out = m.stream(10)
    assert out[0] == m.latency == m.stream(1)[1][0]
    assert {b - a for a, b in zip(out[2:], out[3:])} == {m.interval}
    # no stage goes faster than on its own
    windows = [c.height * c.width for c in convs]
    own = ([window_period(c.height, c.width, c.kernel) for c in convs]
           + [n * perf.engine_interval(s) for n, s in zip(windows, steps)]
           + [perf.engine_interval(s) for s in fc_steps] + [convs[-1].out_pixels])
    assert m.interval >= max(own)


@pytest.mark.parametrize("height, width, kernel", [(4, 5, 3), (6, 6, 5), (3, 7, 1)])
def test_fast_engines_leave_the_sliding_window_the_slowest(height, width, kernel):
    for steps in (1, 2):
        m = _conv_model([ConvTiming(height, width, kernel)], [steps], [1])
        assert m.interval == window_period(height, width, kernel)


def test_the_steady_state_of_an_mlp_is_its_closed_form():
    for beats, steps, sf in ((4, [10, 7, 3], None), (12, [5, 9], None), (1, [1, 1], None),
                             (3, [2, 2, 20, 1], None), (4, [10, 8, 3], [5, 2, 3]),
                             (2, [6, 6, 6], [2, 3, 6]), (6, [6, 4], [2, 2])):
        m = _model(beats, steps, sf=sf)
        assert perf._steady_interval(m) == m.interval
        assert m.stream(1)[1][0] == m.latency


def test_a_backed_up_engine_of_sf_2_fills_its_skid_buffer_then_waits_for_credits():
    # two groups of 3 steps a vector; the sink takes nothing for 200 cycles, then all
    t = perf.engine_timing(6, 4, sf=3)
    groups = perf.skid_groups(3, t.pipeline)
    engine = perf._CreditEngine(t)
    seen, issued_without_credit, vectors_in, vectors_out = [], 0, 0, 0
    for cycle in range(400):
        taken = engine.out_valid and cycle >= 200
        took = engine.ready(True) and vectors_in < 8
        starts = engine.busy and engine.step % 3 == 0
        issued_without_credit += starts and engine._issues() and engine.credits == 0
        engine.edge(took, taken)
        vectors_in += took
        vectors_out += taken
        seen.append((len(engine.skid), engine.credits))
    assert max(n for n, _ in seen) == groups          # the skid buffer fills up exactly
    assert min(c for _, c in seen) == 0 and issued_without_credit == 0
    # held: the output vector, the skid buffer's groups, the vector being issued; all out
    assert vectors_out == vectors_in == 8
    assert seen[-1] == (0, groups)


@pytest.mark.parametrize("sf", [2, 3, 7])
@pytest.mark.parametrize("simd", [2, 16, 88])
def test_skid_groups_are_the_fewest_credits_that_never_slow_an_engine(monkeypatch, sf, simd):
    for nf in (1, 3):
        m = CycleModel(in_beats=1, engines=[perf.engine_timing(nf * sf, simd, sf=sf)])
        assert perf._steady_interval(m) == m.interval == nf * sf
        groups = perf.skid_groups(sf, perf.engine_pipeline(simd))
        monkeypatch.setattr(perf, "skid_groups", lambda s, p, fewer=groups - 1: fewer)
        try:
            assert perf._steady_interval(m) > m.interval
        except RuntimeError as e:       # or no single interval at all
            assert "uneven" in str(e)
        monkeypatch.undo()


def test_a_conv_model_is_checked():
    with pytest.raises(ValueError, match="in_beats"):
        CycleModel(in_beats=10, engines=_model(1, [3, 3]).engines, convs=[ConvTiming(3, 3, 3)])
    with pytest.raises(ValueError, match="fully connected"):
        CycleModel(in_beats=9, engines=_model(1, [3]).engines, convs=[ConvTiming(3, 3, 3)])


def test_cycle_model_of_a_conv_bundle(tmp_path):
    state = randnet.random_cnn_state("4C3-MP2-6C3-5FC-3", (2, 6, 6), act_bits=4, seed=2)
    bundle = export_state(state, tmp_path / "bundle",
                          HardwareConfig(pe=[3, 5, 3, 2], simd=[5, 7, 11, 3]), formats=("hex",))
    m = perf.cycle_model(bundle)
    assert m.convs == [ConvTiming(6, 6, 3, 2), ConvTiming(3, 3, 3, 0)]
    assert [e.steps for e in m.engines] == [la.nf * la.sf for la in bundle.layers]
    assert m.in_beats == 36 and m.convs[-1].out_pixels == 9
    kinds = [type(s).__name__ for s in m.stages()]
    # every engine here has SF ≥ 2: the credit engine
    assert [la.sf > 1 for la in bundle.layers] == [True] * 4
    assert kinds == ["_Window", "_CreditEngine", "_Pool", "_Window", "_CreditEngine",
                     "_Assembler", "_CreditEngine", "_CreditEngine", "_Argmax"]


@pytest.mark.parametrize("width", [1, 127, 128, 129, 6336, 6272])
def test_enable_parts_cover_a_register_once(width):
    parts = perf.enable_parts(width)
    assert len(parts) == perf.enable_copies(width)
    assert [b for lo, hi in parts for b in range(lo, hi)] == list(range(width))
    assert all(0 < hi - lo <= perf.FANOUT_BITS for lo, hi in parts)


@pytest.mark.parametrize("items, fields", [(1, [20]), (3, [20, 45]), (16, [19, 300]),
                                           (2, [128, 1]), (5, [7, 128, 129])])
def test_item_parts_cover_a_register_once_and_split_no_field(items, fields):
    parts = perf.item_parts(items, fields)
    item_bits = sum(fields)
    assert [b for lo, hi in parts for b in range(lo, hi)] == list(range(items * item_bits))
    assert all(0 < hi - lo <= perf.FANOUT_BITS for lo, hi in parts)
    bounds = {k * item_bits + sum(fields[:f]) for k in range(items) for f in range(len(fields))}
    assert all(not any(lo < b < hi for b in bounds) for lo, hi in parts)
    assert len(parts) == items * sum(perf.enable_copies(f) for f in fields)


@pytest.mark.parametrize("pe", [1, 2, 3, 5, 8, 15, 16, 17, 64])
@pytest.mark.parametrize("sf", [1, 2, 3, 9, 16, 18, 100])
def test_shared_requantizers_are_the_fewest_that_keep_up(pe, sf):
    """``share`` PEs take a requantizer in turn within a group's SF cycles, over the fewest
    requantizers that can, spread evenly (no requantizer idles for a whole turn)."""
    share = perf.requant_share(pe, sf)
    lanes = -(-pe // share)
    if sf == 1 or pe == 1:
        assert share == 1
    assert share <= sf and lanes * share >= pe > (lanes - 1) * share
    assert lanes == -(-pe // min(pe, sf))
    assert perf.engine_pipeline(4, 1, share) - perf.engine_pipeline(4) == (share > 1) * share


def test_shared_requantizers_make_the_pipeline_longer_by_their_turns():
    t = perf.engine_timing(16 * 18, 44, sf=18, pe=16)
    assert t.pipeline == perf.engine_pipeline(44) + 16 and t.latency == 16 * 18 + t.pipeline
    assert perf.engine_timing(16, 8, sf=1, pe=16).pipeline == perf.engine_pipeline(8)


@pytest.mark.parametrize("simd, in_bits, lanes", [(44, 8, 4), (16, 8, 16), (30, 8, 15),
                                                  (9, 3, 1), (12, 8, 6), (5, 8, 5)])
def test_input_memory_parts_cover_a_slice_once_and_split_no_beat_between_parts(simd, in_bits,
                                                                              lanes):
    parts = perf.input_memory_parts(simd, in_bits, lanes)
    beat = lanes * in_bits
    assert parts[0][0] == 0 and parts[-1][1] == simd * in_bits
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    for lo, hi in parts:
        assert 0 < hi - lo <= perf.INPUT_PART_BITS
        # whole beats, or bits of one beat
        assert (lo % beat == 0 and hi % beat == 0) or lo // beat == (hi - 1) // beat
    assert len(parts) == (simd // lanes * -(-beat // perf.INPUT_PART_BITS)
                          if beat >= perf.INPUT_PART_BITS
                          else -(-simd // (perf.INPUT_PART_BITS // beat * lanes)))


# (width, depth) → block RAMs as synth_ecp5 (yosys 0.70) mapped them in the 100,000/s
# folding of the 784-256-256-256-10 MLP (its log's memory_libmap lines, its netlist's
# DP16KD cells), at the width yosys saw once it dropped constant columns: the weight
# ROMs of 1,408 words lay their three 512-word rows side by side in 36-bit blocks (4 and
# 12, not 6 and 12); a 224 × 64 parameter ROM ties with logic (7 blocks) and is logic.
@pytest.mark.parametrize("shape, brams, rows", [
    ((48, 1408), 4, 3), ((144, 1408), 12, 3), ((2, 1280), 1, 1), ((224, 64), 0, 1),
    ((216, 64), 6, 1), ((212, 64), 6, 1), ((37, 10), 0, 1)])
def test_yosys_rom_mapping_is_yosys_choice(shape, brams, rows):
    assert perf.yosys_rom_mapping(*shape) == (brams, rows)


# A ROM yosys would map in rows of blocks is read a 512-word row a memory, each row in
# 512 × 36 blocks of its own (bench/results/pnr_fmnist-mlp256_100k.md: 6 blocks for
# 1,408 × 48, against yosys's 4); the others are as yosys maps them.
@pytest.mark.parametrize("shape, brams, rows", [
    ((48, 1408), 6, 3), ((144, 1408), 12, 3), ((48, 1100), 6, 3), ((20, 3000), 6, 6),
    ((37, 513), 3, 1), ((2, 1280), 1, 1),
    ((18, 1024), 1, 1), ((224, 64), 0, 1), ((216, 64), 6, 1)])
def test_deep_block_roms_are_read_in_rows(shape, brams, rows):
    assert perf.rom_rows(*shape) == rows
    assert perf.rom_brams(*shape) == brams
