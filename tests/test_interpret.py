"""Attribution methods on tiny models: exact values, Grad-CAM orientation, SHAP completeness, LIME,
captum classes by name, batches."""

import pytest
import torch
import torch.nn as nn

from audiointerp.errors import ConfigError
from audiointerp.interpret import GradCAMMethod, SaliencyMethod, SHAPMethod, make_method, stratified_background

F_, T_ = 16, 24


class Linear(nn.Module):
    """logits = W · flatten(x): the saliency of class c is exactly W[c]."""

    def __init__(self, n_classes=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(n_classes, F_ * T_, generator=g))

    def forward(self, x):
        return x.flatten(1) @ self.w.T


class BandGate(nn.Module):
    """1x1 conv, gated to frequency rows 4-7 (a band), then 2x2 average pooling: [b, 2, F/2, T/2]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()
        band = torch.zeros(F_, 1)
        band[4:8] = 1.0
        self.register_buffer("band", band)

    def forward(self, x):
        return nn.functional.avg_pool2d(self.conv(x) * self.band, 2)


class BandModel(nn.Module):
    """Class 1's logit depends only on the energy of frequency rows 4-7; F != T so a swap cannot hide."""

    def __init__(self):
        super().__init__()
        self.cam_layer = BandGate()

    def forward(self, x):
        h = self.cam_layer(x)
        return torch.stack([h[:, 0].mean((1, 2)) * 0, h[:, 1].mean((1, 2))], 1)


def test_saliency_exact_on_linear_model():
    model = Linear()
    x = torch.randn(2, 1, F_, T_)
    a = SaliencyMethod(model).attribute(x, torch.tensor([2, 0]))
    assert a.shape == x.shape
    torch.testing.assert_close(a[0].flatten(), model.w[2].detach())
    torch.testing.assert_close(a[1].flatten(), model.w[0].detach())


def test_saliency_is_signed():
    a = SaliencyMethod(Linear()).attribute(torch.randn(1, 1, F_, T_), 1)
    assert (a < 0).any() and (a > 0).any()


def test_gradcam_orientation_lights_up_the_band_as_rows():
    model = BandModel()
    x = torch.rand(1, 1, F_, T_, generator=torch.Generator().manual_seed(0)) + 0.5  # energy everywhere
    cam = GradCAMMethod(model).attribute(x, 1)
    assert cam.shape == x.shape  # [1, 1, F, T]: rows are frequency
    rows = cam[0, 0].abs().mean(1)  # one value per frequency row
    cols = cam[0, 0].abs().mean(0)  # one value per frame
    assert rows[4:8].min() > 0
    assert rows[4:8].mean() > 20 * torch.cat([rows[:2], rows[10:]]).max()
    # every frame is lit (the band spans all of time): the band is a row band, not a column band
    assert cols.min() > 0.2 * cols.max()


def test_gradcam_upsamples_from_a_coarse_layer():
    from audiointerp.models import CompactCNN

    model = CompactCNN(n_freq=F_, n_classes=3, channels=(2, 2, 2, 4)).eval()
    x = torch.randn(2, 1, F_, T_)
    cam = GradCAMMethod(model).attribute(x, torch.tensor([0, 1]))
    assert cam.shape == x.shape and torch.isfinite(cam).all()


def test_shap_completeness_on_linear_model():
    """Expected gradients are exact for a linear model: sum phi = f(x) - E[f(background)]."""
    model = Linear()
    g = torch.Generator().manual_seed(1)
    bg = torch.randn(1, 1, F_, T_, generator=g)  # one reference: the expectation is exact
    x = torch.randn(2, 1, F_, T_, generator=g)
    target = torch.tensor([1, 2])
    phi = SHAPMethod(model, bg, nsamples=16, seed=0).attribute(x, target)
    assert phi.shape == x.shape
    with torch.no_grad():
        expected = model(x).gather(1, target[:, None])[:, 0] - model(bg)[0, target]
        # for a linear model each value is exactly w_c * (x - x')
        torch.testing.assert_close(phi[0].flatten(), model.w[1] * (x[0] - bg[0]).flatten(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(phi.flatten(1).sum(1), expected, atol=1e-3, rtol=1e-4)


def test_shap_seeded_per_clip_independent_of_batch():
    model = Linear()
    bg = torch.randn(6, 1, F_, T_)
    x = torch.randn(3, 1, F_, T_)
    m = SHAPMethod(model, bg, nsamples=8, seed=5)
    batch = m.attribute(x, torch.tensor([0, 1, 2]), seeds=[10, 11, 12])
    single = m.attribute(x[1:2], torch.tensor([1]), seeds=[11])
    torch.testing.assert_close(batch[1:2], single)


@pytest.mark.parametrize("name", ["saliency", "gradcam"])
def test_batch_consistency(name):
    from audiointerp.models import CompactCNN

    torch.manual_seed(0)
    model = CompactCNN(n_freq=F_, n_classes=3, channels=(2, 4, 4, 4)).eval()
    x = torch.randn(3, 1, F_, T_)
    t = torch.tensor([0, 2, 1])
    m = make_method(name, model)
    batch = m.attribute(x, t)
    for i in range(3):
        torch.testing.assert_close(batch[i:i + 1], m.attribute(x[i:i + 1], t[i:i + 1]), atol=1e-5, rtol=1e-4)


def test_unknown_method_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown method 'limes'; valid methods: captum:<ClassName>, gradcam, l2i, "
                                          r"lime, lmac, lmac_ft, piq, saliency, shap"):
        make_method("limes", Linear())


def test_bad_inputs_are_clear_errors():
    m = SaliencyMethod(Linear())
    with pytest.raises(ConfigError, match="batch, 1, n_freq, n_frames"):
        m.attribute(torch.randn(F_, T_), 0)
    with pytest.raises(ConfigError, match="target has 3 entries"):
        m.attribute(torch.randn(2, 1, F_, T_), torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError, match="background"):
        SHAPMethod(Linear(), torch.empty(0, 1, F_, T_))


def test_stratified_background_two_per_class():
    import numpy as np

    labels = np.repeat(np.arange(5), 6)
    idx = stratified_background(labels, per_class=2, seed=0)
    assert len(idx) == 10 and np.bincount(labels[idx]).tolist() == [2] * 5
    assert (idx == stratified_background(labels, per_class=2, seed=0)).all()


def test_one_factory_one_verb_for_every_method():
    """Every method is built by make_method and answers attribute(x, target, seeds=...) with a map
    shaped like x; options a method does not know are refused, not swallowed."""
    from audiointerp.interpret import METHODS, has_native_mask

    model = Linear()
    x = torch.randn(2, 1, F_, T_)
    for name in ("saliency", "gradcam", "shap"):
        kw = {"background": torch.randn(4, 1, F_, T_), "shap_nsamples": 2} if name == "shap" else {}
        m = make_method(name, model if name != "gradcam" else _cam_model(), **kw)
        a = m.attribute(x, torch.tensor([0, 1]), seeds=[3, 4])
        assert a.shape == x.shape and a.dtype == torch.float32 and not has_native_mask(m)
        assert m.name == name and list(METHODS)[:3] == ["saliency", "gradcam", "shap"]
    with pytest.raises(TypeError):
        SaliencyMethod(model).attribute(x, 0, nsamples=4)  # no **kwargs that swallow typos
    with pytest.raises(ConfigError, match="unknown method option 'nsamples'"):
        make_method("shap", model, nsamples=4)
    with pytest.raises(ConfigError, match="seeds has 1 entries"):
        SHAPMethod(model, torch.randn(4, 1, F_, T_), nsamples=2).attribute(x, 0, seeds=[1])


def _cam_model():
    from audiointerp.models import CompactCNN

    torch.manual_seed(0)
    return CompactCNN(n_freq=F_, n_classes=3, channels=(2, 4, 4, 4)).eval()


def test_shap_background_without_training_folds_is_one_error(tmp_path, synthetic_root):
    import shutil

    import pandas as pd

    from audiointerp.errors import DatasetError
    from audiointerp.interpret import shap_background
    from audiointerp.processing import FeatureConfig

    root = tmp_path / "esc"
    shutil.copytree(synthetic_root, root)
    meta = pd.read_csv(root / "meta" / "esc50.csv")
    meta[meta["fold"] == 5].to_csv(root / "meta" / "esc50.csv", index=False)
    with pytest.raises(DatasetError, match="training folds"):
        shap_background(root, FeatureConfig(kind="mel", duration=1.0))


# --- LIME --------------------------------------------------------------------------------------

class RegionMax(nn.Module):
    """Class 1's logit is 0.2 (max of x over rows 8-15, frames 40-55 + 30): only that region counts,
    and replacing it by its mean lowers the logit (a linear logit would not see mean filling)."""

    def forward(self, x):
        r = x[:, 0, 8:16, 40:56].amax((1, 2))
        return torch.stack([torch.zeros_like(r), 0.2 * (r + 30)], 1)


def _blobs(n=1):
    """``[n, 1, 32, 96]`` dB maps: a quiet floor and four textured blobs, one of them the region."""
    g = torch.Generator().manual_seed(0)
    x = -80 + 4 * torch.rand(n, 1, 32, 96, generator=g)
    for r, c in [(8, 40), (8, 4), (20, 70), (20, 20)]:
        x[..., r:r + 8, c:c + 16] = -30 + 10 * torch.rand(n, 1, 8, 16, generator=g)
    return x


def test_lime_grid_puts_the_weight_on_the_region_patch():
    from audiointerp.interpret import LimeMethod

    x = _blobs()
    m = make_method("lime", RegionMax(), lime_segmentation="grid", lime_grid=(8, 20), lime_nsamples=300, seed=0)
    assert isinstance(m, LimeMethod) and m.stochastic
    a = m.attribute(x, torch.tensor([1]), seeds=[0])
    assert a.shape == x.shape and a.dtype == torch.float32
    region = torch.zeros(32, 96, dtype=torch.bool)
    region[8:16, 40:60] = True  # the grid patch (1, 2), which holds the region (rows 8-15, frames 40-55)
    inside, outside = a[0, 0][region], a[0, 0][~region]
    assert (inside == inside[0]).all()  # one superpixel, one weight
    assert inside[0] > 0.2 and outside.abs().max() < 0.02 * inside[0]  # the Ridge surrogate leaks a little


def test_lime_quickshift_puts_the_largest_weight_on_the_region_superpixel():
    from audiointerp.interpret import LimeMethod

    x = _blobs()
    m = LimeMethod(RegionMax(), nsamples=300, seed=0)
    a = m.attribute(x, 1, seeds=[0])
    seg = m.segments(x, seeds=[0])[0, 0]
    region_label = seg[8:16, 40:56].unique()
    assert region_label.numel() == 1  # the region lies in one superpixel
    weights = {int(lab): a[0, 0][seg == lab] for lab in seg.unique()}
    assert all((w == w[0]).all() for w in weights.values())  # piecewise constant on the superpixels
    top = max(weights, key=lambda lab: weights[lab][0])
    assert top == int(region_label) and weights[top][0] > 0.5
    assert max(abs(float(w[0])) for lab, w in weights.items() if lab != top) < 0.05 * float(weights[top][0])


def test_quickshift_segments_cover_the_map_exactly_once():
    from audiointerp.interpret import grid_segments, quickshift_segments

    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 120, generator=g).cumsum(1)  # smooth along time: structure to segment
    seg = quickshift_segments(x, seed=0)
    assert seg.shape == x.shape and seg.dtype == torch.int64
    counts = torch.bincount(seg.flatten())
    assert seg.min() == 0 and (counts > 0).all() and counts.sum() == x.numel()  # labels 0..n-1, each used
    assert len(counts) > 1
    assert torch.equal(seg, quickshift_segments(x, seed=0))  # seeded
    constant = quickshift_segments(torch.full((8, 10), -100.0))  # a silent map: no division by zero
    assert constant.shape == (8, 10) and constant.min() == 0
    grid = grid_segments(5, 7, (2, 3))
    assert grid.tolist() == [[0, 0, 0, 1, 1, 1, 2], [0, 0, 0, 1, 1, 1, 2], [3, 3, 3, 4, 4, 4, 5],
                             [3, 3, 3, 4, 4, 4, 5], [6, 6, 6, 7, 7, 7, 8]]


def test_superpixel_means_is_lime_off_value():
    from audiointerp.interpret import superpixel_means

    x = torch.tensor([[1.0, 3.0, -100.0], [5.0, 0.0, -20.0]])
    seg = torch.tensor([[0, 0, 1], [2, 0, 1]])
    torch.testing.assert_close(superpixel_means(x, seg), torch.tensor([[4 / 3, 4 / 3, -60.0], [5.0, 4 / 3, -60.0]]))


def test_lime_reproducible_under_its_seed_and_independent_of_the_batch():
    x = _blobs(3) + torch.randn(3, 1, 32, 96, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([1, 0, 1])
    m = make_method("lime", RegionMax(), lime_nsamples=100, lime_batch=32, seed=7)
    batch = m.attribute(x, target, seeds=[10, 11, 12])
    single = m.attribute(x[1:2], target[1:2], seeds=[11])
    torch.testing.assert_close(batch[1:2], single, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.attribute(x, target, seeds=[10, 11, 12]), batch, rtol=0, atol=0)
    other = make_method("lime", RegionMax(), lime_nsamples=100, lime_batch=32, seed=8).attribute(x[:1], 1, seeds=[10])
    assert not torch.equal(other, batch[:1])  # another seed draws other samples
    rebatched = make_method("lime", RegionMax(), lime_nsamples=100, lime_batch=7, seed=7).attribute(x[:1], 1, seeds=[10])
    torch.testing.assert_close(rebatched, batch[:1], rtol=1e-4, atol=1e-6)  # batch size: float rounding only


@pytest.mark.parametrize("kw, word", [({"lime_nsamples": 1}, "lime_nsamples must be an integer >= 2"),
                                      ({"lime_batch": 0}, "lime_batch must be an integer >= 1"),
                                      ({"lime_segmentation": "slic"}, "unknown LIME segmentation 'slic'"),
                                      ({"lime_grid": (8, 0)}, "lime_grid must be two positive integers")])
def test_lime_bad_options_are_one_error(kw, word):
    with pytest.raises(ConfigError, match=word):
        make_method("lime", RegionMax(), **kw)


# --- captum classes by name --------------------------------------------------------------------

def test_captum_integrated_gradients_on_a_linear_model_with_the_silence_baseline():
    """IG of a linear model is exact: (x - baseline) * w, with baseline = -100 dB by default."""
    model = Linear()
    x = torch.randn(2, 1, F_, T_, generator=torch.Generator().manual_seed(2)) * 10 - 50
    target = torch.tensor([2, 0])
    m = make_method("captum:IntegratedGradients", model, method_args={"n_steps": 8})
    assert m.name == "captum:IntegratedGradients" and not m.stochastic
    a = m.attribute(x, target)
    w = model.w.detach()
    torch.testing.assert_close(a.flatten(1), (x + 100).flatten(1) * w[target], rtol=1e-4, atol=1e-4)
    b = make_method("captum:IntegratedGradients", model, method_args={"baselines": -60}).attribute(x, target)
    torch.testing.assert_close(b.flatten(1), (x + 60).flatten(1) * w[target], rtol=1e-4, atol=1e-4)


def test_captum_occlusion_with_a_window_from_the_options():
    """Occlusion of a linear model, windows tiling the map: every bin of a window gets the logit drop
    of silencing that window, sum over the window of w * (x + 100)."""
    model = Linear()
    x = torch.randn(1, 1, F_, T_, generator=torch.Generator().manual_seed(4)) * 10 - 50
    m = make_method("captum:Occlusion", model, method_args={"sliding_window_shapes": [4, 6], "strides": [4, 6]})
    a = m.attribute(x, torch.tensor([1]))[0, 0]
    contrib = (model.w[1].detach().view(F_, T_) * (x[0, 0] + 100))
    expected = contrib.view(4, 4, 4, 6).sum((1, 3))  # [4 row windows, 4 column windows]
    torch.testing.assert_close(a, expected.repeat_interleave(4, 0).repeat_interleave(6, 1), rtol=1e-4, atol=1e-3)


@pytest.mark.filterwarnings("ignore:Setting .*hooks:UserWarning")
def test_captum_methods_by_name_answer_the_verb():
    from audiointerp.interpret import check_method

    model = _cam_model()
    x = torch.randn(2, 1, F_, T_)
    for name, args in [("captum:DeepLift", {}), ("captum:GuidedBackprop", {}), ("captum:InputXGradient", {}),
                       ("captum:GradientShap", {"n_samples": 3, "baselines": [-100, -80]})]:
        assert check_method(name) == name
        m = make_method(name, model, method_args=args, seed=1)
        a = m.attribute(x, torch.tensor([0, 2]), seeds=[4, 5])
        assert a.shape == x.shape and a.dtype == torch.float32 and torch.isfinite(a).all(), name
        if m.stochastic:  # seeded per clip, independent of the batch
            torch.testing.assert_close(m.attribute(x[1:], torch.tensor([2]), seeds=[5]), a[1:])
    ixg = make_method("captum:InputXGradient", Linear()).attribute(x, torch.tensor([1, 1]))
    torch.testing.assert_close(ixg.flatten(1), x.flatten(1) * Linear().w[1].detach())


@pytest.mark.parametrize("name, args, word", [
    ("captum:Integrated", {}, "unknown captum attribution class 'Integrated'.*classes that fit: Deconvolution"),
    ("captum:LayerGradCam", {}, "'captum:LayerGradCam' does not fit attribute.*layer or neuron method"),
    ("captum:NoiseTunnel", {}, "wraps another attribution method"),
    ("captum:FeaturePermutation", {}, "depends on its batch"),
    ("captum:IntegratedGradients", {"n_step": 8}, "unsupported argument 'n_step' for captum:IntegratedGradients"),
    ("captum:IntegratedGradients", {"target": 1}, r"method_args\['target'\] .* is set by audiointerp"),
    ("captum:Occlusion", {}, "captum:Occlusion needs 'sliding_window_shapes' in method_args"),
    ("captum:DeepLiftShap", {}, "needs a distribution of baselines"),
    ("captum:IntegratedGradients", {"baselines": "silence"}, "baselines.* must be a dB level"),
])
def test_unknown_or_unfit_captum_class_is_one_error(name, args, word):
    from audiointerp.interpret import check_method

    with pytest.raises(ConfigError, match=word):
        if args:
            make_method(name, Linear(), method_args=args)
        else:
            check_method(name)
            make_method(name, Linear())
