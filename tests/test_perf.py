from bchw import perf
from bchw.perf import CycleModel, EngineTiming


def _model(in_beats, steps, simd=4):
    return CycleModel(in_beats=in_beats, engines=[
        EngineTiming(steps=s, pipeline=perf.engine_pipeline(simd),
                     latency=s + perf.engine_pipeline(simd)) for s in steps])


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
