"""Attribution methods on tiny models: exact values, Grad-CAM orientation, SHAP completeness, batches."""

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
    with pytest.raises(ConfigError, match="gradcam, l2i, piq, saliency, shap"):
        make_method("lime", Linear())


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
