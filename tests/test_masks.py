"""Every mask formula, its range and its degenerate cases; applying masks in dB."""

import math

import pytest
import torch

from audiointerp.errors import ConfigError
from audiointerp.masks import (
    MASK_NAMES,
    apply_mask,
    make_masks,
    mask_names,
    minmax,
    minmax_pos,
    pos_threshold,
    top_k,
    top_k_pos,
)

A = torch.tensor([[[[-2.0, -1.0, 0.0, 1.0, 3.0]]]])  # [1, 1, 1, 5]


def test_fourteen_standard_masks_in_order():
    assert MASK_NAMES == ["minmax", "sigmoid", "bin", "topK_5", "topK_30", "topK_50", "minmax_pos",
                          "sigmoid_pos", "pos_thresh_25", "pos_thresh_50", "pos_thresh_75",
                          "topK_5_pos", "topK_30_pos", "topK_50_pos"]
    assert list(make_masks(torch.randn(2, 1, 4, 6))) == MASK_NAMES


def test_hand_computed_values():
    m = make_masks(A, k=(0.2, 0.4, 0.6), tau=(0.25, 0.5, 0.75))
    v = {k: t.flatten().tolist() for k, t in m.items()}
    assert v["minmax"] == pytest.approx([0, 0.2, 0.4, 0.6, 1.0])
    assert v["sigmoid"] == pytest.approx([1 / (1 + math.exp(2)), 1 / (1 + math.e), 0.5, 1 / (1 + math.exp(-1)),
                                         1 / (1 + math.exp(-3))])
    assert v["bin"] == [0, 0, 0, 1, 1]
    # q_{0.8} of [-2,-1,0,1,3] = 1.4 (linear) -> only 3; q_{0.6} = 0.4 -> 1 and 3; q_{0.4} = -0.4 -> 0, 1, 3
    assert v["topK_20"] == [0, 0, 0, 0, 1]
    assert v["topK_40"] == [0, 0, 0, 1, 1]
    assert v["topK_60"] == [0, 0, 1, 1, 1]
    assert v["minmax_pos"] == pytest.approx([0, 0, 0, 1 / 3, 1])
    assert v["sigmoid_pos"] == pytest.approx([0.5, 0.5, 0.5, 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-3))])
    assert v["pos_thresh_25"] == [0, 0, 0, 1, 1]
    assert v["pos_thresh_50"] == [0, 0, 0, 0, 1]
    assert v["pos_thresh_75"] == [0, 0, 0, 0, 1]
    assert v["topK_20_pos"] == [0, 0, 0, 0, 1]  # topK_20, positives only
    assert v["topK_40_pos"] == [0, 0, 0, 1, 1]  # topK_40: both positive
    assert v["topK_60_pos"] == [0, 0, 0, 1, 1]  # topK_60 keeps 0 too, which is not positive


def test_ranges():
    a = torch.randn(4, 1, 16, 20, generator=torch.Generator().manual_seed(0)) * 5
    for name, m in make_masks(a).items():
        assert m.shape == a.shape, name
        assert m.min() >= 0 and m.max() <= 1, name
    m = make_masks(a)
    assert torch.allclose(m["minmax"].flatten(1).amin(1), torch.zeros(4))
    assert torch.allclose(m["minmax"].flatten(1).amax(1), torch.ones(4))


def test_topk_fraction_is_per_clip():
    a = torch.randn(3, 1, 20, 50, generator=torch.Generator().manual_seed(1))
    a[1] *= 1000  # scale of one clip must not matter
    for k in (0.05, 0.3, 0.5):
        frac = top_k(a, k).flatten(1).mean(1)
        assert torch.allclose(frac, torch.full((3,), k), atol=2 / 1000)
        frac_pos = top_k_pos(a, k).flatten(1).sum(1)
        assert (frac_pos <= round(k * 1000)).all()


def test_topk_pos_never_all_ones():
    a = torch.tensor([[[[0.5, -1.0, -2.0, -3.0]]]])
    for k in (0.5, 1.0):
        assert top_k_pos(a, k).flatten().tolist() == [1, 0, 0, 0]
    negative = -torch.rand(2, 1, 8, 8) - 0.1
    for name in ("topK_5_pos", "topK_30_pos", "topK_50_pos", "pos_thresh_25", "minmax_pos", "bin"):
        assert make_masks(negative, names=[name])[name].sum() == 0, name


def test_degenerate_constant_map():
    c = torch.full((2, 1, 4, 4), 0.7)
    m = make_masks(c)
    assert (m["minmax"] == 0).all()  # constant map: no preference, zeros (as sklearn's MinMaxScaler)
    assert (m["minmax_pos"] == 1).all()  # A+/max A+ = 1 everywhere
    z = make_masks(torch.zeros(1, 1, 3, 3))
    assert (z["minmax_pos"] == 0).all() and (z["pos_thresh_25"] == 0).all() and (z["topK_5_pos"] == 0).all()
    assert not torch.isnan(torch.stack(list(z.values()))).any()


def test_parameters_are_arguments():
    names = mask_names(k=(0.1,), tau=(0.9,))
    assert names == ["minmax", "sigmoid", "bin", "topK_10", "minmax_pos", "sigmoid_pos", "pos_thresh_90", "topK_10_pos"]
    m = make_masks(A, k=(0.1,), tau=(0.9,))
    assert m["pos_thresh_90"].flatten().tolist() == [0, 0, 0, 0, 1]
    assert pos_threshold(A, 0.3).flatten().tolist() == [0, 0, 0, 1, 1]


@pytest.mark.parametrize("call", [lambda: top_k(A, 0.0), lambda: top_k_pos(A, 1.5), lambda: pos_threshold(A, -0.1)])
def test_bad_parameters_quote_the_value(call):
    with pytest.raises(ConfigError, match="must be a fraction in"):
        call()


def test_unknown_mask_lists_valid_names():
    with pytest.raises(ConfigError, match="topK_5_pos"):
        make_masks(A, names=["blur"])
    # a name carries its own fraction
    assert torch.equal(make_masks(A, names=["topK_40"])["topK_40"], top_k(A, 0.4))


def test_mask_names_parse_and_never_collide():
    from audiointerp.masks import mask_name, parse_mask_name

    assert parse_mask_name("topK_5_pos") == ("topK_pos", 0.05)
    assert parse_mask_name("pos_thresh_50") == ("pos_thresh", 0.5) and parse_mask_name("minmax") == ("minmax", None)
    assert parse_mask_name("topK_30.1") == ("topK", pytest.approx(0.301))
    assert mask_name("topK_pos", 0.001) == "topK_0.1_pos" and mask_name("pos_thresh", 0.25) == "pos_thresh_25"
    for family, v in [("topK", 0.05), ("topK", 0.123), ("topK_pos", 0.5), ("pos_thresh", 0.75)]:
        assert parse_mask_name(mask_name(family, v)) == (family, pytest.approx(v))  # round trip
    assert mask_names((0.3, 0.301), (0.5,))[3:5] == ["topK_30", "topK_30.1"]
    for bad, word in [((0.3, 0.30000001), "share the mask name"), ((0.3, 0.3), "twice"), ((), "at least one")]:
        with pytest.raises(ConfigError, match=word):
            mask_names(bad)
    for bad in ("topK_0", "topK_150", "pos_thresh_5_pos", "topK_x"):
        with pytest.raises(ConfigError):
            parse_mask_name(bad)


def test_apply_mask_exact_identities():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 64, 50, generator=g) * 120 - 100  # dB in [-100, 20]
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    x_in, x_out = apply_mask(x, ones)
    assert torch.equal(x_in, x)  # exactly x
    assert torch.allclose(x_out, torch.full_like(x, -100.0), atol=1e-4)
    x_in, x_out = apply_mask(x, zeros)
    assert torch.equal(x_out, x)
    assert torch.allclose(x_in, torch.full_like(x, -100.0), atol=1e-4)


def test_apply_mask_formula_and_broadcast():
    x = torch.tensor([[[[-100.0, -40.0, 0.0, 20.0]]]])
    m = torch.tensor([[[[1.0, 0.5, 0.25, 0.0]]]])
    x_in, x_out = apply_mask(x, m)
    assert x_in.flatten().tolist() == pytest.approx([-100.0, -70.0, -75.0, -100.0])
    assert x_out.flatten().tolist() == pytest.approx([-100.0, -70.0, -25.0, 20.0])
    # masks of several kinds broadcast over a [batch, n_masks, 1, F, T] stack
    xs = x[:, None].expand(1, 3, 1, 1, 4)
    ms = torch.stack([m, 1 - m, torch.ones_like(m)], dim=1)
    a, b = apply_mask(xs, ms)
    assert a.shape == (1, 3, 1, 1, 4) and torch.equal(a[:, 2], x)


def test_minmax_functions_direct():
    assert minmax(A).flatten().tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 1.0])
    assert minmax_pos(A).flatten().tolist() == pytest.approx([0, 0, 0, 1 / 3, 1])


def test_tie_rule_keeps_a_tied_piece_whole():
    """On a piecewise-constant map (LIME superpixels) topK_k and topK_k_pos share the threshold
    q_{1-k}(A): a piece tied at the threshold is kept whole, never split by index order."""
    pieces = torch.tensor([3.0, 1.0, 2.0, 0.5])  # four superpixels of 5, 5, 6 and 8 bins (N = 24)
    labels = torch.tensor([0] * 5 + [2] * 6 + [1] * 5 + [3] * 8)
    a = pieces[labels].view(1, 1, 4, 6)
    for k in (0.05, 0.3, 0.5, 0.7):
        assert torch.equal(top_k_pos(a, k), top_k(a, k)), k  # positive map: identical masks
    # k = 0.3: q_0.7 = 2 (linear interpolation over the 24 values) -> the pieces 3 and 2 (11 bins, 46 %)
    kept = top_k_pos(a, 0.3).flatten()
    assert kept.tolist() == [1.0] * 11 + [0.0] * 13
    for k in (0.05, 0.3, 0.5):  # every piece is all in or all out
        m = top_k_pos(a, k).flatten()
        assert all(m[labels == p].min() == m[labels == p].max() for p in range(4)), k
    m = make_masks(a, k=(0.3,), names=["topK_30", "topK_30_pos"])
    assert torch.equal(m["topK_30"], m["topK_30_pos"])


def test_topk_pos_is_topk_on_positives_and_never_all_ones():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 1, 10, 12, generator=g)
    a[1] = a[1].abs() + 0.1  # one positive clip
    a[2] = -a[2].abs()  # one clip without positive values
    a[0, 0, 0, 0] = 0.0  # an exact zero is not positive
    for k in (0.05, 0.3, 0.5, 1.0):
        torch.testing.assert_close(top_k_pos(a, k), top_k(a, k) * (a > 0))
        assert torch.equal(top_k_pos(a[1:2], k), top_k(a[1:2], k))
        assert top_k_pos(a, k)[2].sum() == 0
        assert not bool(top_k_pos(a[:1], k).all())  # never all ones on a map with non-positive values
    assert top_k_pos(a[1:2], 1.0).all()  # a positive map at k = 1: everything
