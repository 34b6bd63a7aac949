"""Networks shared by the engine tests of both datapaths."""

from bchw import randnet
from bchw.export import Bundle, HardwareConfig, export_state

# sizes, act_bits, PE, SIMD: odd sizes PE and SIMD mostly don't divide; B and C add the
# one-step engine (PE = out, SIMD = in), SIMD 1, PE 1, and 1-bit activations. Engines of
# SF ≥ 2 share requantizers (perf.requant_share): one for all PEs in A and C, and in D's
# first engine three for five PEs, two each (the last one's second turn padding).
ENGINE_NETS = {
    "A": ([23, 11, 7, 3], 5, [4, 3, 2], [5, 4, 3]),
    "B": ([10, 6, 5], 8, [6, 1], [10, 4]),
    "C": ([9, 13, 2], 1, [5, 2], [1, 13]),
    "D": ([12, 10, 3], 4, [5, 3], [6, 4]),
}
ENGINE_LAYERS = [(net, i) for net, spec in ENGINE_NETS.items() for i in range(len(spec[0]) - 1)]


def engine_bundles(tmp_path_factory, seed: int, in_lanes: int | None = None
                   ) -> dict[str, Bundle]:
    """A bundle of random weights for each of ENGINE_NETS."""
    out = {}
    for k, (name, (sizes, act_bits, pe, simd)) in enumerate(ENGINE_NETS.items()):
        state = randnet.random_state(sizes, act_bits=act_bits, seed=seed + k)
        out[name] = export_state(state, tmp_path_factory.mktemp(name) / "bundle",
                                 HardwareConfig(pe=pe, simd=simd, in_lanes=in_lanes),
                                 formats=("hex",))
    return out
