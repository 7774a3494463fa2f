"""Every metric on a hand-computed probability table; SPS/COMP against their definitions and Quantus."""

import math

import numpy as np
import pytest
import torch

from audiointerp.metrics import METRICS, ad, ag, ai, comp, ff, fid_in, score, sps

# three clips, three classes; c = argmax p = [0, 1, 2]
P = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.0, 0.0, 1.0]], dtype=torch.float64)
P_IN = torch.tensor([[0.9, 0.05, 0.05], [0.6, 0.25, 0.15], [0.1, 0.1, 0.8]], dtype=torch.float64)
P_OUT = torch.tensor([[0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]], dtype=torch.float64)


def test_ff():
    assert ff(P, P_OUT).tolist() == pytest.approx([0.4, -0.1, 0.6])


def test_ai():
    assert ai(P, P_IN).tolist() == [100.0, 0.0, 0.0]


def test_ai_ignores_float_rounding_noise():
    noisy = P.clone()
    noisy[:, :] += 1e-9  # same mask, different batch: last-bit differences
    assert ai(P, noisy).tolist() == [0.0, 0.0, 0.0]


def test_ad():
    # clip 0 rises (0), clip 1: (0.5-0.25)/0.5 = 50 %, clip 2: (1-0.8)/1 = 20 %
    assert ad(P, P_IN).tolist() == pytest.approx([0.0, 50.0, 20.0])


def test_ad_uses_probabilities_once():
    """AD on probabilities from one softmax; a second softmax would shrink the drop."""
    logits = torch.tensor([[4.0, 0.0, 0.0]])
    logits_in = torch.tensor([[1.0, 0.0, 0.0]])
    p, p_in = logits.softmax(1), logits_in.softmax(1)
    expected = 100 * (p[0, 0] - p_in[0, 0]) / p[0, 0]
    assert ad(p, p_in).item() == pytest.approx(expected.item())
    assert ad(p.softmax(1), p_in.softmax(1)).item() != pytest.approx(expected.item(), rel=0.1)


def test_ag():
    # clip 0: (0.9-0.6)/(1-0.6) = 75 %, clip 1 drops (0), clip 2 p_c = 1 -> 0 (no room to gain)
    assert ag(P, P_IN).tolist() == pytest.approx([75.0, 0.0, 0.0])


def test_fid_in():
    assert fid_in(P, P_IN).tolist() == [1.0, 0.0, 1.0]


def test_directions_declared():
    assert {k: m.higher_is_better for k, m in METRICS.items()} == {
        "FF": True, "AI": True, "AD": False, "AG": True, "FidIn": True, "SPS": True, "COMP": False}
    assert METRICS["AD"].arrow == "↓" and METRICS["FF"].arrow == "↑"


def test_sps_and_comp_hand_computed():
    m = torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    # Gini of [0,0,0,1]: (2*4-4-1)*1/(4*1) = 0.75; of [0,0,1,1]: ((5-5)... ) = (1*1 + 3*1)/(4*2) = 0.5
    assert sps(m).tolist() == pytest.approx([0.75, 0.5])
    assert comp(m).tolist() == pytest.approx([0.0, math.log(2)])


def test_constant_mask_is_not_the_simplest():
    n = 64 * 50
    for value in (0.0, 0.3, 1.0):
        m = torch.full((2, 1, 64, 50), value)
        assert sps(m).tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
        assert comp(m).tolist() == pytest.approx([math.log(n)] * 2)
    one_hot = torch.zeros(1, 1, 64, 50)
    one_hot[0, 0, 3, 7] = 1
    assert sps(one_hot).item() > sps(torch.ones(1, 1, 64, 50)).item()
    assert comp(one_hot).item() < comp(torch.ones(1, 1, 64, 50)).item()


def test_sps_scale_invariant_and_bounded():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(5, 1, 8, 8, generator=g)
    assert torch.allclose(sps(m), sps(m * 7.0))
    assert ((sps(m) >= 0) & (sps(m) < 1)).all()
    assert ((comp(m) >= 0) & (comp(m) <= math.log(64) + 1e-9)).all()


def test_sps_comp_agree_with_quantus():
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(0)
    a = rng.random((4, 1, 8, 10)).astype(np.float64) ** 3
    x = np.zeros_like(a)
    y = np.zeros(4, dtype=int)
    q_sps = quantus.Sparseness(disable_warnings=True, normalise=False, abs=True)(
        model=None, x_batch=x, y_batch=y, a_batch=a.copy(), device="cpu")
    q_comp = quantus.Complexity(disable_warnings=True, normalise=False, abs=True)(
        model=None, x_batch=x, y_batch=y, a_batch=a.copy(), device="cpu")
    ours_sps = sps(torch.from_numpy(a)).numpy()
    ours_comp = comp(torch.from_numpy(a)).numpy()
    # Quantus adds 1e-7 to every value before the Gini index; the difference is tiny.
    np.testing.assert_allclose(ours_sps, q_sps, atol=1e-5)
    np.testing.assert_allclose(ours_comp, q_comp, atol=1e-5)


def test_score_returns_all_seven_per_clip():
    m = torch.rand(3, 1, 4, 4)
    s = score(P, P_IN, P_OUT, m)
    assert list(s) == list(METRICS)
    assert all(v.shape == (3,) for v in s.values())


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="batch, n_classes"):
        ff(P, P[:2])
