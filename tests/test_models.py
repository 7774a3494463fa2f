"""Tests of audiointerp.models: CompactCNN, checkpoints, build_model, PANNs CNN14 loading.

Small CompactCNN widths keep everything fast; CNN14 (~80 M parameters) is built only a few
times, through one module-scoped fake PANNs checkpoint, and never run on large inputs.
"""

from __future__ import annotations

import platform
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import USER_MODEL

from audiointerp import models
from audiointerp.errors import CheckpointError, ConfigError
from audiointerp.models import (
    PANNS_CNN14_16K,
    Cnn14,
    CompactCNN,
    ConvBlock,
    build_model,
    download_panns_cnn14,
    load_classifier,
    load_panns_cnn14,
    read_checkpoint,
    save_checkpoint,
)
from audiointerp.processing import FeatureConfig, FeatureExtractor

SMALL = dict(n_freq=64, n_classes=50, channels=(4, 8, 8, 8))
CLASS_NAMES = [f"class{i:02d}" for i in range(50)]
PANNS_RECORD_ID = "zenodo.org/record/3987831"


def seeded(*shape, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def small_model(seed=0, **kwargs) -> CompactCNN:
    torch.manual_seed(seed)
    return CompactCNN(**{**SMALL, **kwargs})


def trained_state(model: nn.Module, n_frames: int = 101) -> nn.Module:
    """One train-mode forward pass so the BatchNorm running statistics are not the defaults."""
    model.train()
    with torch.no_grad():
        model(seeded(4, 1, model.n_freq, n_frames, seed=123) * 10 - 40)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# CompactCNN

def test_compact_cnn_output_shape():
    model = small_model().eval()
    with torch.no_grad():
        out = model(seeded(2, 1, 64, 101))
    assert out.shape == (2, 50)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_compact_cnn_other_sizes():
    model = small_model(n_freq=257, n_classes=10, first_pool=(4, 2)).eval()
    with torch.no_grad():
        assert model(seeded(3, 1, 257, 40)).shape == (3, 10)


@pytest.mark.parametrize("shape", [(2, 1, 32, 101), (2, 1, 257, 101), (2, 2, 64, 101), (1, 64, 101)])
def test_compact_cnn_wrong_input_raises(shape):
    model = small_model()
    with pytest.raises(ConfigError) as err:
        model(torch.zeros(shape))
    msg = str(err.value)
    assert str(tuple(shape)) in msg  # quotes the shape it got
    assert "[batch, 1, 64, n_frames]" in msg  # and the one it expects


def test_compact_cnn_batch_consistency_in_eval():
    model = trained_state(small_model())
    x = seeded(4, 1, 64, 101, seed=1) * 20 - 30
    with torch.no_grad():
        full = model(x)
        for i in range(4):
            torch.testing.assert_close(model(x[i:i + 1])[0], full[i], atol=1e-5, rtol=0)


def test_compact_cnn_train_mode_uses_dropout():
    model = small_model(dropout=0.9).train()
    x = seeded(2, 1, 64, 101, seed=2)
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_compact_cnn_cam_layer_keeps_freq_by_time():
    model = small_model().eval()
    assert model.cam_layer is model.blocks[-1]
    seen = {}
    handle = model.cam_layer.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    with torch.no_grad():
        model(seeded(2, 1, 64, 101))
    handle.remove()
    assert seen["out"].shape == (2, 8, 64 // 8, 101 // 8)  # [batch, C, F', T'] = [2, 8, 8, 12]


def test_compact_cnn_cam_layer_follows_frequency():
    """A change confined to the top frequency rows changes only the top rows of the CAM map."""
    model = trained_state(small_model())
    x = seeded(1, 1, 64, 101, seed=3)
    y = x.clone()
    # Last 8 of 64 mel rows. Receptive field: two 3x3 convs per block (+-2 rows) and /2 pools
    # give input rows 54-63 -> 27-31 -> 25-31 -> 12-15 -> 10-15 -> 5-7 -> map rows 3-7 of 8.
    y[:, :, 56:, :] += 5.0
    out = {}
    handle = model.cam_layer.register_forward_hook(lambda m, i, o: out.__setitem__(len(out), o))
    with torch.no_grad():
        model(x)
        model(y)
    handle.remove()
    diff = (out[0] - out[1]).abs().amax(dim=(0, 1, 3))  # per frequency row of the map
    assert diff[:3].max() == 0  # rows outside the receptive field are untouched
    assert (diff[3:] > 0).all()


def test_build_model():
    model = build_model("CompactCNN", **SMALL)
    assert isinstance(model, CompactCNN)
    assert [b.conv1.out_channels for b in model.blocks] == [4, 8, 8, 8]


def test_build_model_unknown_name():
    with pytest.raises(ConfigError) as err:
        build_model("Nope")
    msg = str(err.value)
    assert "'Nope'" in msg
    assert "CompactCNN" in msg and "Cnn14" in msg


# ---------------------------------------------------------------------------------------------
# Checkpoints

@pytest.fixture
def mel_cfg() -> FeatureConfig:
    return FeatureConfig(kind="mel", hop_length=320, n_mels=64, f_min=20.0)  # not the default


@pytest.fixture
def ckpt_path(tmp_path, mel_cfg) -> Path:
    model = trained_state(small_model(seed=5))
    return save_checkpoint(tmp_path / "ckpts" / "small.pt", model, SMALL, mel_cfg, CLASS_NAMES,
                           metrics={"val_acc": 0.5, "test_acc": 0.25},
                           training={"epochs": 1, "lr": 1e-3})


def test_checkpoint_round_trip(tmp_path, mel_cfg):
    model = trained_state(small_model(seed=5))
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, SMALL, mel_cfg, CLASS_NAMES,
                           metrics={"val_acc": 0.5}, training={"epochs": 3})
    assert path == tmp_path / "sub" / "m.pt" and path.is_file()
    assert not list(path.parent.glob("*.tmp"))

    loaded, extractor, ckpt = load_classifier(path)
    assert isinstance(loaded, CompactCNN)
    assert not loaded.training
    assert not any(m.training for m in loaded.modules())
    own, other = model.state_dict(), loaded.state_dict()
    assert own.keys() == other.keys()
    for k in own:
        assert torch.equal(own[k], other[k]), k
    x = seeded(2, 1, 64, 101, seed=7) * 15 - 40
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-6, rtol=0)

    assert isinstance(extractor, FeatureExtractor)
    assert extractor.cfg == mel_cfg
    assert ckpt["class_names"] == CLASS_NAMES
    assert ckpt["metrics"] == {"val_acc": 0.5}
    assert ckpt["training"] == {"epochs": 3}
    assert "torch" in ckpt["versions"]
    assert ckpt["versions"]["torch"] == version("torch")
    assert ckpt["versions"]["python"] == platform.python_version()
    assert ckpt["architecture"] == "CompactCNN"
    assert ckpt["arch_args"] == SMALL
    assert ckpt["format"] == models.CHECKPOINT_FORMAT
    assert ckpt["path"] == str(path)
    assert models.model_name(ckpt) == "m"


def test_checkpoint_state_is_a_copy(tmp_path, mel_cfg):
    model = small_model()
    path = save_checkpoint(tmp_path / "c.pt", model, SMALL, mel_cfg, CLASS_NAMES)
    saved = model.blocks[0].conv1.weight.detach().clone()
    with torch.no_grad():
        model.blocks[0].conv1.weight.add_(1.0)  # training goes on after saving
    loaded, _, ckpt = load_classifier(path)
    assert torch.equal(loaded.blocks[0].conv1.weight, saved)
    assert ckpt["metrics"] == {} and ckpt["training"] == {}


def test_load_classifier_accepts_matching_features(ckpt_path, mel_cfg):
    model, extractor, _ = load_classifier(ckpt_path, features=FeatureConfig.from_dict(mel_cfg.to_dict()))
    assert extractor.cfg == mel_cfg
    feats = extractor(torch.from_numpy(np.sin(np.linspace(0, 400, 16000, dtype=np.float32))))
    assert feats.shape == (1, 1, 64, 1 + 16000 // 320)
    with torch.no_grad():
        assert model(feats).shape == (1, 50)


def test_checkpoint_missing_file(tmp_path):
    path = tmp_path / "nope" / "absent.pt"
    with pytest.raises(CheckpointError) as err:
        load_classifier(path)
    assert str(path) in str(err.value) and "not found" in str(err.value)


def test_checkpoint_plain_dict(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3), "epoch": 1}, path)
    with pytest.raises(CheckpointError) as err:
        load_classifier(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "state_dict" in msg and "epoch" in msg  # what it needs and what it has


def test_checkpoint_not_a_dict(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="Tensor"):
        read_checkpoint(path)


def test_checkpoint_random_bytes(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError) as err:
        load_classifier(path)
    assert str(path) in str(err.value) and "cannot read" in str(err.value)


def test_checkpoint_wrong_format_tag(ckpt_path):
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["format"] = "something-else/9"
    torch.save(ckpt, ckpt_path)
    with pytest.raises(CheckpointError, match="something-else/9"):
        load_classifier(ckpt_path)


def test_checkpoint_features_do_not_fit_architecture(ckpt_path):
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["features"] = FeatureConfig.stft_default().to_dict()  # 257 rows, model built for 64
    torch.save(ckpt, ckpt_path)
    with pytest.raises(CheckpointError) as err:
        load_classifier(ckpt_path)
    msg = str(err.value)
    assert str(ckpt_path) in msg
    assert "257" in msg and "n_freq=64" in msg


def test_checkpoint_class_names_do_not_fit(ckpt_path):
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["class_names"] = CLASS_NAMES[:10]
    torch.save(ckpt, ckpt_path)
    with pytest.raises(CheckpointError, match="10 class names for n_classes=50"):
        load_classifier(ckpt_path)


def test_checkpoint_unknown_feature_key(ckpt_path):
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["features"] = {**ckpt["features"], "top_db": 80}
    torch.save(ckpt, ckpt_path)
    with pytest.raises(CheckpointError, match="top_db"):
        load_classifier(ckpt_path)


def test_load_classifier_with_other_features(ckpt_path, mel_cfg):
    with pytest.raises(CheckpointError) as err:
        load_classifier(ckpt_path, features=FeatureConfig.stft_default())
    msg = str(err.value)
    assert str(ckpt_path) in msg
    assert "'stft'" in msg and "'mel'" in msg  # both configurations are quoted
    with pytest.raises(CheckpointError):
        load_classifier(ckpt_path, features=FeatureConfig.mel_default())  # mel, but other hop


def test_checkpoint_weights_do_not_fit(ckpt_path):
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["arch_args"] = {**SMALL, "channels": (4, 8, 8, 16)}
    torch.save(ckpt, ckpt_path)
    with pytest.raises(CheckpointError) as err:
        load_classifier(ckpt_path)
    assert not isinstance(err.value, RuntimeError)
    msg = str(err.value)
    assert str(ckpt_path) in msg and "do not fit CompactCNN" in msg
    assert "size mismatch for blocks.3.conv1.weight" in msg  # the reason, not just torch's header


def test_checkpoint_missing_weight(ckpt_path):
    ckpt = torch.load(ckpt_path, weights_only=False)
    del ckpt["state_dict"]["fc.weight"]
    torch.save(ckpt, ckpt_path)
    with pytest.raises(CheckpointError) as err:
        load_classifier(ckpt_path)
    assert str(ckpt_path) in str(err.value)
    assert 'Missing key(s) in state_dict: "fc.weight"' in str(err.value)


def test_clone_state_is_detached_copy():
    model = small_model()
    state = models.clone_state(model)
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    assert not torch.equal(state["fc.bias"], model.fc.bias)
    assert not state["fc.bias"].requires_grad


# ---------------------------------------------------------------------------------------------
# PANNs CNN14

def panns_layout(state: dict) -> dict:
    """Our Cnn14 state_dict in the PANNs checkpoint layout: bn0 without the ``.bn`` level and
    conv kernels in [out, in, time, mel] order, plus PANNs' front-end buffers."""
    out = {}
    for k, v in state.items():
        if k.startswith("bn0.bn."):
            k = "bn0." + k[len("bn0.bn."):]
        out[k] = v.transpose(2, 3).contiguous() if v.dim() == 4 else v
    g = torch.Generator().manual_seed(9)
    out["spectrogram_extractor.stft.conv_real.weight"] = torch.randn(257, 1, 512, generator=g)
    out["spectrogram_extractor.stft.conv_imag.weight"] = torch.randn(257, 1, 512, generator=g)
    out["logmel_extractor.melW"] = torch.rand(257, 64, generator=g)
    return out


@pytest.fixture(scope="module")
def panns(tmp_path_factory):
    """(original Cnn14 with 527 outputs, its PANNs-layout state, checkpoint path, loaded model)."""
    torch.manual_seed(0)
    orig = Cnn14(n_freq=64, n_classes=527)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-default normalisation statistics, so bn0/bn1 must really be loaded
        for bn in (orig.bn0.bn, orig.conv_block1.bn1, orig.conv_block1.bn2):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
    orig.eval()
    sd = panns_layout(orig.state_dict())
    path = tmp_path_factory.mktemp("panns") / PANNS_CNN14_16K
    torch.save({"model": sd, "iteration": 123}, path)
    loaded = load_panns_cnn14(path, n_classes=50).eval()
    return orig, sd, path, loaded


def test_panns_missing_file_names_zenodo(tmp_path):
    path = tmp_path / "pretrained" / PANNS_CNN14_16K
    with pytest.raises(CheckpointError) as err:
        load_panns_cnn14(path)
    msg = str(err.value)
    assert PANNS_RECORD_ID in msg
    assert str(path) in msg


def test_panns_weights_loaded_and_transposed(panns):
    orig, sd, path, loaded = panns
    assert isinstance(loaded, Cnn14)
    w = loaded.conv_block1.conv1.weight
    assert w.shape == (64, 1, 3, 3)
    assert torch.equal(w, sd["conv_block1.conv1.weight"].transpose(2, 3))
    assert torch.equal(w, orig.conv_block1.conv1.weight)
    assert not torch.equal(w, sd["conv_block1.conv1.weight"])  # really transposed (kernel not symmetric)
    # every weight except the output layer comes from the checkpoint
    own = orig.state_dict()
    for k, v in loaded.state_dict().items():
        if not k.startswith("fc_audioset"):
            assert torch.equal(v, own[k]), k
    assert torch.equal(loaded.bn0.bn.running_mean, sd["bn0.running_mean"])
    # a new 50-class output layer
    assert loaded.fc_audioset.out_features == 50
    assert loaded.fc_audioset.in_features == 2048
    assert loaded.n_freq == 64


def test_panns_kernel_orientation(panns):
    """The loaded model on [mel, time] computes what PANNs computes on [time, mel]."""
    orig, sd, path, loaded = panns
    # PANNs' own first stage, in its orientation, with the checkpoint's weights as stored
    panns_bn0 = nn.BatchNorm2d(64)
    panns_bn0.load_state_dict({k[len("bn0."):]: v for k, v in sd.items() if k.startswith("bn0.")})
    panns_block = ConvBlock(1, 64)
    panns_block.load_state_dict({k[len("conv_block1."):]: v for k, v in sd.items()
                                 if k.startswith("conv_block1.")})
    panns_bn0.eval()
    panns_block.eval()

    x = seeded(1, 1, 64, 32, seed=11) * 10 - 30  # [batch, 1, mel, time]
    with torch.no_grad():
        # conv_block1 alone
        ours = loaded.conv_block1(x)
        theirs = panns_block(x.transpose(2, 3)).transpose(2, 3)
        assert ours.shape == (1, 64, 32, 16)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours, orig.conv_block1(x), atol=1e-6, rtol=0)
        # the test is sensitive to the orientation: untransposed kernels give something else
        assert not torch.allclose(panns_block(x), ours, atol=1e-3)
        # bn0 (over mel bins) then conv_block1, as in PANNs' forward on [batch, 1, time, mel]
        xt = x.transpose(2, 3)
        ref = panns_block(panns_bn0(xt.transpose(1, 3)).transpose(1, 3)).transpose(2, 3)
        torch.testing.assert_close(loaded.conv_block1(loaded.bn0(x)), ref, atol=1e-5, rtol=1e-5)


def test_panns_full_forward_small_input(panns):
    orig, sd, path, loaded = panns
    x = seeded(1, 1, 64, 64, seed=12) * 10 - 30
    with torch.no_grad():
        out = loaded(x)
    assert out.shape == (1, 50)
    assert torch.isfinite(out).all()
    with pytest.raises(ConfigError, match=r"\(1, 1, 32, 64\)"):
        loaded(torch.zeros(1, 1, 32, 64))
    assert loaded.cam_layer is loaded.conv_block6


def test_panns_checkpoint_without_conv_block1(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError) as err:
        load_panns_cnn14(path)
    assert str(path) in str(err.value) and "conv_block1.conv1.weight" in str(err.value)


def test_panns_checkpoint_not_a_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a PANNs CNN14 checkpoint"):
        load_panns_cnn14(path)


def test_panns_checkpoint_unreadable(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"\x00\x01junk" * 100)
    with pytest.raises(CheckpointError, match="cannot read PANNs checkpoint"):
        load_panns_cnn14(path)


def test_panns_checkpoint_wrong_shape(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"model": {"conv_block1.conv1.weight": torch.zeros(32, 1, 3, 3)}}, path)
    with pytest.raises(CheckpointError, match="conv_block1.conv1.weight has shape"):
        load_panns_cnn14(path)


# ---------------------------------------------------------------------------------------------
# download_panns_cnn14 (offline, file:// URLs)

def test_download_panns_copies_file_and_checks_its_digest(tmp_path):
    import hashlib

    src = tmp_path / "src.bin"
    payload = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    src.write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    dest = tmp_path / "pretrained"
    path = download_panns_cnn14(dest, url=src.as_uri(), md5=md5)
    assert path == dest / "Cnn14_16k_mAP=0.438.pth"
    assert path.read_bytes() == payload
    assert sorted(p.name for p in dest.iterdir()) == ["Cnn14_16k_mAP=0.438.pth"]
    # present: kept, no download attempted
    assert download_panns_cnn14(dest, url=(tmp_path / "gone.bin").as_uri(), md5=md5) == path
    assert path.read_bytes() == payload
    # by default the digest must be Zenodo's: another file is refused and nothing is kept
    other = tmp_path / "other"
    with pytest.raises(CheckpointError, match=models.PANNS_CNN14_16K_MD5):
        download_panns_cnn14(other, url=src.as_uri())
    assert list(other.iterdir()) == []
    # a present file of another digest is named, not used
    with pytest.raises(CheckpointError, match="delete it"):
        download_panns_cnn14(dest)


def test_download_panns_unreachable(tmp_path):
    dest = tmp_path / "pretrained"
    with pytest.raises(CheckpointError) as err:
        download_panns_cnn14(dest, url="file:///nonexistent/Cnn14.pth")
    msg = str(err.value)
    assert PANNS_RECORD_ID in msg
    assert "file:///nonexistent/Cnn14.pth" in msg
    assert not list(dest.glob("*.part"))
    assert not (dest / PANNS_CNN14_16K).exists()


def test_download_panns_interrupted_leaves_no_part_file(tmp_path, monkeypatch):
    def interrupted(url, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError("connection reset")

    monkeypatch.setattr(models.urllib.request, "urlretrieve", interrupted)
    dest = tmp_path / "pretrained"
    with pytest.raises(CheckpointError, match="connection reset") as err:
        download_panns_cnn14(dest, url="https://example.invalid/x.pth")
    assert PANNS_RECORD_ID in str(err.value)
    assert list(dest.iterdir()) == []


def test_fused_inference_copy_matches_the_model():
    from audiointerp.models import CompactCNN, fuse_for_inference

    torch.manual_seed(0)
    model = CompactCNN(n_freq=64, n_classes=5, channels=(4, 8, 8, 8)).eval()
    for bn in [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
    fused = fuse_for_inference(model)
    x = torch.randn(3, 1, 64, 40) * 20 - 40
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.blocks.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.blocks.modules())  # original untouched
    x.requires_grad_(True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_panns_weights_transfer_to_the_stft_model(panns):
    """For 257 STFT rows the convolutions transfer and bn0 (one statistic per row) is re-initialised."""
    orig, sd, path, loaded = panns
    stft = load_panns_cnn14(path, n_classes=10, n_freq=257)
    assert stft.n_freq == 257 and stft.bn0.bn.num_features == 257 and stft.fc_audioset.out_features == 10
    assert torch.equal(stft.conv_block3.conv2.weight, orig.conv_block3.conv2.weight)
    assert torch.equal(stft.bn0.bn.running_mean, torch.zeros(257))  # fresh statistics
    with torch.no_grad():
        assert stft.eval()(torch.zeros(1, 1, 257, 64) - 50).shape == (1, 10)




def test_bring_your_own_classifier_by_import_path(tmp_path):
    from audiointerp.models import architecture_name, check_contract, resolve_architecture

    file = tmp_path / "mymodels.py"
    file.write_text(USER_MODEL)
    arch = f"{file}:TinyNet"
    model = build_model(arch, n_freq=64, n_classes=3)
    assert architecture_name(model) == arch and type(model) is resolve_architecture(arch)
    check_contract(model, 64, 21, 3)
    path = save_checkpoint(tmp_path / "mine.pt", model, {"n_freq": 64, "n_classes": 3},
                           FeatureConfig(kind="mel", duration=0.2), ["a", "b", "c"])
    loaded, ex, ck = load_classifier(path)
    assert ck["architecture"] == arch and type(loaded).__name__ == "TinyNet"
    x = torch.randn(2, 1, 64, ex.cfg.n_frames) * 10 - 40
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
    with pytest.raises(ConfigError, match=r"returns \(2, 1\)"):
        check_contract(build_model(f"{file}:WrongShape"), 64, 21, 3)
    with pytest.raises(ConfigError, match="no cam_layer"):
        check_contract(build_model(f"{file}:NoCam"), 64, 21, 3)


def test_unimportable_architecture_is_one_clear_error(tmp_path):
    file = tmp_path / "mymodels.py"
    file.write_text(USER_MODEL)
    model = build_model(f"{file}:TinyNet")
    path = save_checkpoint(tmp_path / "mine.pt", model, {"n_freq": 64, "n_classes": 3},
                           FeatureConfig(kind="mel", duration=0.2), ["a", "b", "c"])
    file.unlink()
    import sys

    for name in [m for m in sys.modules if m.startswith("audiointerp_user_")]:
        del sys.modules[name]
    with pytest.raises(CheckpointError, match="cannot import the architecture") as err:
        load_classifier(path)
    assert "mymodels.py" in str(err.value)
    for bad, word in [("no.such.module:Net", "No module named"), (f"{tmp_path}/x.py:Net", "no such file"),
                      ("torch.nn:NotThere", "no nn.Module class 'NotThere'"), ("Resnet", "unknown architecture")]:
        with pytest.raises(ConfigError, match=word):
            build_model(bad)
    with pytest.raises(ConfigError, match="cannot be built"):
        build_model("CompactCNN", wings=2)


def test_register_architecture():
    from audiointerp.models import ARCHITECTURES, register_architecture

    @register_architecture("TestOnlyNet")
    class TestOnlyNet(CompactCNN):
        """A registered subclass."""

    try:
        assert build_model("TestOnlyNet", **SMALL).__class__ is TestOnlyNet
        with pytest.raises(ConfigError, match="already registered"):
            register_architecture("TestOnlyNet", CompactCNN)
    finally:
        ARCHITECTURES.pop("TestOnlyNet")


def test_device_selection():
    from audiointerp.devices import cpu_model, describe_device, resolve_device

    assert cpu_model() and describe_device(torch.device("cpu"))["cpu"] == cpu_model()
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None).type in ("cpu", "cuda")
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    assert describe_device(torch.device("cpu"))["name"] == "cpu"
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(ConfigError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
