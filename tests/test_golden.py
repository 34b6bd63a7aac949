import numpy as np
import pytest

from bchw import golden, randnet
from bchw.export import HardwareConfig, export_state


def test_widths_from_worst_case():
    w = golden.layer_widths(784, 8, mul_bits=18, last=False, act_bits=8, score_bits=16)
    assert w.acc_max == 784 * 255
    assert -(1 << (w.acc_bits - 1)) <= -w.acc_max and w.acc_max < 1 << (w.acc_bits - 1)
    assert w.acc_max >= 1 << (w.acc_bits - 2), "no wasted bit"
    assert (w.out_lo, w.out_hi, w.out_bits) == (0, 255, 8)
    s = golden.layer_widths(256, 8, mul_bits=18, last=True, act_bits=8, score_bits=16)
    assert (s.out_lo, s.out_hi, s.out_signed) == (-32768, 32767, True)


@pytest.mark.parametrize("last", [False, True])
def test_requant_params_match_real_arithmetic(last):
    rng = np.random.default_rng(0)
    w = golden.layer_widths(300, 8, mul_bits=18, last=last, act_bits=8, score_bits=16)
    k = rng.normal(0, 0.01, 200) * rng.choice([1, 1e-3, 30], 200)
    c = rng.normal(50, 200, 200)
    mul, shift, bias = golden.requant_params(k, c, w)
    acc = rng.integers(w.acc_min, w.acc_max + 1, size=(500, 1))
    got = golden.requantize(acc, mul, shift, bias, w.out_lo, w.out_hi)
    real = k * acc + c + 0.5
    want = np.clip(np.floor(real), w.out_lo, w.out_hi)
    # the integer form errs by at most (|acc|/2 + 1) / 2**S before the floor (M and B are
    # rounded to the nearest integer), so outputs differ only that close to a step
    bound = (np.abs(acc) / 2 + 1) / 2.0 ** shift
    err = (acc * mul + bias) / 2.0 ** shift - real
    unclamped = (real >= w.out_lo - 1) & (real <= w.out_hi + 2)   # offsets are clipped outside
    assert (np.abs(err)[unclamped] <= bound[unclamped] + 1e-9).all()
    near_step = np.abs(real - np.round(real)) <= bound
    assert ((got == want) | near_step).all()
    assert (got != want).mean() < 0.05
    assert (np.abs(mul) < 1 << 17).all()


def test_requant_fails_clearly_for_huge_scales():
    w = golden.layer_widths(10, 8, mul_bits=8, last=False, act_bits=8, score_bits=16)
    with pytest.raises(golden.RequantRangeError, match="neuron 1"):
        golden.requant_params(np.array([0.5, 1e6]), np.array([0.0, 0.0]), w)


@pytest.mark.parametrize("sign", [1, -1])
def test_adversarial_inputs_reach_the_accumulator_bound(tmp_path, sign):
    state = randnet.random_state([33, 9, 4], act_bits=8, seed=5)
    for layer in state["layers"]:
        layer["weight"].fill_(0.5 * sign)
    b = export_state(state, tmp_path / "b", HardwareConfig(pe=[3, 2], simd=[5, 4]))
    r = golden.infer(b, np.full((1, 33), 255, dtype=np.uint8))
    assert (r.accs[0] == sign * b.layers[0].widths.acc_max).all()
    assert r.accs[0].max() <= b.layers[0].widths.acc_max


def test_infer_checks_shape(small_bundle):
    with pytest.raises(ValueError, match="20"):
        golden.infer(small_bundle, np.zeros((2, 19), dtype=np.uint8))


def test_classes_are_first_index_of_max(small_bundle):
    r = golden.infer(small_bundle, randnet.random_images(50, 20, seed=9))
    for scores, cls in zip(r.scores, r.classes):
        assert scores[cls] == scores.max() and (scores[:cls] < scores.max()).all()


def test_golden_agrees_with_the_float_model_of_a_random_mlp(small_bundle):
    """Classes nearly always, scores within a step or two of the float scores in steps of
    2**-score_frac_bits (tests/test_conv_export.py does the same for convolutions)."""
    import torch

    from bchw.nn import model_from_checkpoint

    model = model_from_checkpoint(randnet.random_state([20, 13, 7, 5], act_bits=4, seed=1))
    images = randnet.random_images(1000, 20, seed=4)
    with torch.no_grad():
        scores = model(torch.tensor(images, dtype=torch.float32)).numpy()
    r = golden.infer(small_bundle, images)
    assert (scores.argmax(1) == r.classes).mean() >= 0.95
    err = np.abs(scores * 2.0 ** small_bundle.manifest["arithmetic"]["score_frac_bits"]
                 - r.scores)
    assert (err <= 2).mean() >= 0.98 and np.median(err) <= 0.5


def test_batches_change_nothing(small_bundle, monkeypatch):
    images = randnet.random_images(300, 20, seed=8)
    whole = golden.infer(small_bundle, images)
    monkeypatch.setattr(golden, "BATCH_VALUES", 20 * 7)    # batches of 7 images
    batched = golden.infer(small_bundle, images)
    for a, b in zip(whole.layers + whole.accs, batched.layers + batched.accs):
        assert np.array_equal(a, b)
    assert np.array_equal(golden.classify(small_bundle, images), whole.classes)
    assert golden.infer(small_bundle, images[:0]).scores.shape == (0, 5)
