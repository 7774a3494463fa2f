"""L-MAC (audiointerp.learned.lmac): masks, loss, guided fine-tuning, training (frozen classifier, best epoch,
resume), checkpoints, the explain entry point and the training notebook."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO

from audiointerp.errors import CheckpointError, ConfigError
from audiointerp.learned import (
    HiddenMap,
    HiddenMaps,
    LMACData,
    LMACTrainConfig,
    conv_block_names,
    default_lmac_layers,
    draw_partners,
    fit_lmac,
    guidance_correlation,
    guidance_target,
    interpreter_card,
    listenable,
    lmac_explain,
    lmac_mixture_data,
    lmac_variant,
    load_interpreter,
    magnitude_classifier,
    mix_with_partners,
    new_interpreter,
    read_interpreter,
    save_interpreter,
    train_lmac,
)
from audiointerp.models import Cnn14, CompactCNN, load_classifier
from audiointerp.processing import FeatureConfig, features, log1p_stft
from audiointerp.provenance import file_sha256

CFG = FeatureConfig(kind="mel", duration=1.0)  # 64 x 101 features, STFT 257 x 101
FREQS = (300, 700, 1500, 2500, 4000, 6000)


def _clips():
    t = torch.arange(CFG.n_samples) / CFG.sample_rate
    wav = torch.stack([0.5 * torch.sin(2 * torch.pi * f * t) for f in FREQS])
    return wav + 0.05 * torch.randn(wav.shape, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def toy():
    """A seeded small CompactCNN (frozen, eval) whose conv weights are scaled by 4, so that its output depends
    on its input (an untrained net's activations fade layer after layer); with the clips, their features, L,
    block outputs and logits."""
    torch.manual_seed(0)
    wav = _clips()
    x = features(wav, CFG)[0]
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    model = CompactCNN(n_freq=64, n_classes=3, channels=(4, 8, 8, 8), dropout=0.0).eval()
    with torch.no_grad():
        model.norm.bn.running_mean.fill_(-40.0)
        model.norm.bn.running_var.fill_(400.0)
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(4.0)
    for p in model.parameters():
        p.requires_grad_(False)
    layers = default_lmac_layers(model)
    with torch.no_grad():
        logits, hidden = HiddenMaps(model, layers)(x)
    return {"model": model, "wav": wav, "x": x, "y": y, "L": log1p_stft(wav, CFG)[0], "layers": layers,
            "hidden": hidden, "logits": logits}


def _net(toy, seed=0, **args):
    torch.manual_seed(seed)
    return new_interpreter("lmac", CFG, [h.shape[1:] for h in toy["hidden"]], 3, layers=toy["layers"],
                           **{"width": 16, **args})


def _data(toy, guided=False):
    if guided:
        return LMACData(L=toy["L"], wav=toy["wav"], labels=toy["y"])
    return LMACData(L=toy["L"], hidden=toy["hidden"], logits=toy["logits"], labels=toy["y"])


# --- hidden maps and the decoder's output ------------------------------------------------------------------------

def test_hidden_maps_capture_the_named_blocks_and_remove_their_hooks(toy):
    model, x = toy["model"], toy["x"]
    assert conv_block_names(model) == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    assert default_lmac_layers(model) == ["blocks.1", "blocks.2", "blocks.3"]
    assert default_lmac_layers(Cnn14()) == ["conv_block3", "conv_block4", "conv_block5", "conv_block6"]
    logits, hidden = HiddenMaps(model, ["blocks.0", "blocks.3"])(x)
    assert [tuple(h.shape) for h in hidden] == [(6, 4, 32, 50), (6, 8, 8, 12)]
    torch.testing.assert_close(logits, model(x))
    lg, h = HiddenMap(model)(x)  # the one-layer map is unchanged: cam_layer = blocks.3
    torch.testing.assert_close(h, hidden[1])
    torch.testing.assert_close(lg, logits)
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(ConfigError, match="no layer 'blocks.9'.*blocks.0"):
        HiddenMaps(model, ["blocks.9"])


@pytest.mark.parametrize("kind", ["mel", "stft"])
def test_mask_covers_every_stft_frame_and_lies_in_the_unit_interval(kind):
    cfg = FeatureConfig(kind=kind, duration=1.0, hop_length=160 if kind == "mel" else 256)
    torch.manual_seed(0)
    model = (CompactCNN(n_freq=64, n_classes=3, channels=(4, 8, 8, 8)) if kind == "mel" else
             CompactCNN(n_freq=257, n_classes=3, channels=(4, 8, 8, 8), first_pool=(4, 2))).eval()
    x = features(_clips()[:2], cfg)[0]
    layers = default_lmac_layers(model)
    _, hidden = HiddenMaps(model, layers)(x)
    for coarse in ((4, 2), (1, 1)):
        net = new_interpreter("lmac", cfg, [h.shape[1:] for h in hidden], 3, layers=layers, width=8, coarse=coarse)
        with torch.no_grad():
            mask, amap = net.explain(hidden)
        assert mask.shape == amap.shape == (2, 257, cfg.n_frames)  # 101 or 63 frames: none dropped
        assert float(mask.min()) >= 0 and float(mask.max()) <= 1
        torch.testing.assert_close(mask, torch.sigmoid(amap))
    with pytest.raises(ConfigError, match="coarse"):
        new_interpreter("lmac", cfg, [h.shape[1:] for h in hidden], 3, layers=layers, coarse=(3, 1))
    with pytest.raises(ConfigError, match="one \\(C, F, T\\) shape per layer"):
        new_interpreter("lmac", cfg, [h.shape[1:] for h in hidden], 3, layers=layers[:1])


# --- the loss ----------------------------------------------------------------------------------------------------

def test_loss_terms_follow_their_definition_exactly(toy):
    net = _net(toy)
    hidden, L = toy["hidden"], toy["L"]
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]]).repeat(2, 1)
    weights = torch.randn(3, 257, generator=torch.Generator().manual_seed(1))

    def classify(mag):  # a differentiable stand-in: linear in the mean magnitude of each bin
        return mag.mean(-1) @ weights.T

    terms = net.losses(hidden, L, logits, classify)
    M = torch.sigmoid(net(hidden))
    c = torch.tensor([0, 1, 2, 0, 1, 2])
    ce_in = F.cross_entropy(classify(torch.expm1(M * L)), c)
    ce_out = F.cross_entropy(classify(torch.expm1((1 - M) * L)), c)
    torch.testing.assert_close(terms["in"], ce_in)
    torch.testing.assert_close(terms["out"], ce_out)
    torch.testing.assert_close(terms["l1"], M.mean())
    torch.testing.assert_close(terms["total"], 4 * ce_in - 0.2 * ce_out + 6.4 * M.mean())
    assert float(terms["guide"]) == 0.0 and float(terms["guided"]) == 0.0
    weights = (net.l_in, net.l_out, net.l1, net.guide, net.corr_threshold, net.guide_threshold)
    assert weights == (4, 0.2, 6.4, 4, 0.6, 0.35)


@pytest.mark.parametrize("term", ["total", "in"])
def test_a_few_steps_lower_the_loss_and_the_mask_stays_in_the_unit_interval(toy, term):
    net = _net(toy)
    classify = magnitude_classifier(toy["model"], CFG)
    args = (toy["hidden"], toy["L"], toy["logits"], classify)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    before = float(net.losses(*args)[term].detach())
    for _ in range(3):
        opt.zero_grad()
        net.losses(*args)[term].backward()
        opt.step()
    assert float(net.losses(*args)[term].detach()) < before
    with torch.no_grad():
        mask, _ = net.explain(toy["hidden"])
    assert float(mask.min()) >= 0 and float(mask.max()) <= 1


def test_guidance_target_and_correlation_on_hand_computed_values():
    L = torch.tensor([[[0.0, 1.0], [0.35, 0.3]], [[2.0, 0.0], [0.7, 0.69]]])
    assert guidance_target(L).tolist() == [[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]]  # >= 0.35 max
    a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    b = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[2.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(guidance_correlation(a, b), torch.tensor([0.0, 2 ** -0.5]))


def test_guided_term_applies_only_to_items_above_the_correlation_threshold(toy):
    net = _net(toy)
    # items 0-1: the mixture is the clean clip (correlation ~1); items 2-3: clean and mixture in disjoint
    # halves of the clip (correlation exactly 0)
    L_clean, L_mix = toy["L"][:4].clone(), toy["L"][:4].clone()
    L_clean[2:, :, :50] = 0
    L_mix[2:, :, 50:] = 0
    hidden = [h[:4] for h in toy["hidden"]]
    logits = toy["logits"][:4]
    classify = magnitude_classifier(toy["model"], CFG)
    z = net(hidden)
    M = torch.sigmoid(z)
    corr = guidance_correlation(M * L_mix, L_clean)
    assert corr[:2].min() > 0.9 and corr[2:].abs().max() == 0
    terms = net.losses(hidden, L_mix, logits, classify, L_clean=L_clean)
    bce = F.binary_cross_entropy(M, guidance_target(L_clean), reduction="none").mean((1, 2))
    gate = torch.tensor([1.0, 1.0, 0.0, 0.0])
    torch.testing.assert_close(terms["guided"], torch.tensor(0.5))
    torch.testing.assert_close(terms["guide"], (bce * gate).mean(), rtol=1e-5, atol=1e-6)
    plain = net.losses(hidden, L_mix, logits, classify)
    l1_b = M.flatten(1).mean(1)
    # the guided items swap their L1 term for 4·BCE; the others keep it
    torch.testing.assert_close(terms["total"] - plain["total"],
                               4 * (bce * gate).mean() - 6.4 * (l1_b * gate).mean(), rtol=1e-5, atol=1e-5)
    # a threshold above every correlation: no item guided, the plain loss back
    net.corr_threshold = 1.01
    torch.testing.assert_close(net.losses(hidden, L_mix, logits, classify, L_clean=L_clean)["total"], plain["total"])


def test_mixtures_are_seeded_and_with_a_clip_of_another_class():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    p1 = draw_partners(labels, torch.Generator().manual_seed(3))
    assert torch.equal(p1, draw_partners(labels, torch.Generator().manual_seed(3)))
    assert torch.all(labels[p1] != labels)
    assert torch.all(draw_partners(torch.zeros(4, dtype=torch.long), torch.Generator()) != torch.arange(4))
    wav = _clips()
    mixed, partner = mix_with_partners(wav, labels, torch.Generator().manual_seed(3))
    assert torch.equal(partner, p1) and mixed.shape == wav.shape
    assert float(mixed.abs().amax(1).min()) == pytest.approx(1.0, abs=1e-6)  # peak-normalised like every clip
    with pytest.raises(ConfigError, match="alpha"):
        mix_with_partners(wav, labels, torch.Generator(), alpha=1.5)


# --- training ----------------------------------------------------------------------------------------------------

def test_training_leaves_the_classifier_frozen_and_out_of_the_optimiser(toy, monkeypatch):
    model = toy["model"]
    before = copy.deepcopy(model.state_dict())
    seen = []
    real = torch.optim.Adam

    def spy(params, **kw):
        params = list(params)
        seen.extend(params)
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", spy)
    net = _net(toy)
    data = _data(toy)
    out = fit_lmac(net, model, CFG, data, data, epochs=1, batch_size=3, lr=1e-2)
    assert {id(p) for p in seen} == {id(p) for p in net.parameters()}
    assert not {id(p) for p in seen} & {id(p) for p in model.parameters()}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    assert out["epochs_run"] == 1 and set(out["history"][0]) >= {"train_total", "val_total", "val_in", "val_out"}


def test_fit_keeps_the_best_validation_epoch_not_the_last(toy, monkeypatch):
    import audiointerp.learned.training as training

    net = _net(toy)
    data = _data(toy)
    scripted = iter([3.0, 1.0, 2.0, 4.0])
    monkeypatch.setattr(training, "_evaluate_lmac", lambda *a, **k: {"total": next(scripted)})
    states = []
    out = fit_lmac(net, toy["model"], CFG, data, data, epochs=4, batch_size=3, lr=1e-2,
                   on_epoch=lambda row: states.append(copy.deepcopy(net.state_dict())))
    assert out["best_epoch"] == 2 and out["epochs_run"] == 4 and out["best_val"]["val_total"] == 1.0
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, states[1][k])
    assert any(not torch.equal(v, states[3][k]) for k, v in net.state_dict().items())


def test_resume_after_an_interruption_gives_the_uninterrupted_result(toy, tmp_path):
    model = toy["model"]
    train = _data(toy, guided=True)
    val = lmac_mixture_data(model, CFG, train, toy["layers"], seed=1)
    assert val.L_clean is train.L and len(val.hidden) == 3
    kw = dict(epochs=3, batch_size=6, lr=1e-2, seed=5, guided=True, identity={"run": "a"})
    full_net = _net(toy, seed=2)
    full = fit_lmac(full_net, model, CFG, train, val, state_path=tmp_path / "full.state.pt", **kw)

    def crash(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt("killed")

    state_path = tmp_path / "resumed.state.pt"
    with pytest.raises(KeyboardInterrupt):
        fit_lmac(_net(toy, seed=2), model, CFG, train, val, state_path=state_path, on_epoch=crash, **kw)
    assert torch.load(state_path, weights_only=False)["epoch"] == 2
    net = _net(toy, seed=9)  # another initialisation: the saved state replaces it
    resumed = fit_lmac(net, model, CFG, train, val, state_path=state_path, **kw)
    assert resumed["sessions"] == 2 and resumed["epochs_run"] == 3
    assert len(resumed["history"]) == len(full["history"]) == 3
    for a, b in zip(resumed["history"], full["history"]):
        assert {k: v for k, v in a.items() if k != "minutes"} == pytest.approx({k: v for k, v in b.items()
                                                                                 if k != "minutes"})
    assert any(h["train_guided"] > 0 for h in full["history"])  # the guided term was in play
    for k, v in full_net.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="another training run.*run"):
        fit_lmac(_net(toy), model, CFG, train, val, state_path=state_path, **{**kw, "identity": {"run": "b"}})


def _save(tmp_path, toy_checkpoint, name="lmac_toy_mel.pt", training=None):
    model, _, _ = load_classifier(toy_checkpoint)
    layers = default_lmac_layers(model)
    x = features(_clips(), CFG)[0]
    _, hidden = HiddenMaps(model, layers)(x)
    torch.manual_seed(1)
    net = new_interpreter("lmac", CFG, [h.shape[1:] for h in hidden], 3, layers=layers, width=8)
    path = tmp_path / name
    save_interpreter(path, net, {"path": "toy_mel.pt", "sha256": file_sha256(toy_checkpoint), "name": "toy_mel"},
                     CFG, training=training or {"history": []})
    return model, x, net, path


def test_saved_lmac_reloads_to_identical_masks_and_refuses_another_classifier(tmp_path, toy_checkpoint):
    model, x, net, path = _save(tmp_path, toy_checkpoint)
    want_mask, want_map = lmac_explain(net, model, x)
    loaded, ckpt = load_interpreter(path, toy_checkpoint, kind="lmac")
    assert ckpt["args"]["layers"] == ["blocks.1", "blocks.2", "blocks.3"] and ckpt["args"]["l1"] == 6.4
    mask, amap = lmac_explain(loaded, model, x)
    assert torch.equal(mask, want_mask) and torch.equal(amap, want_map)
    assert mask.shape == (6, 257, CFG.n_frames)
    assert not any(p.requires_grad for p in loaded.parameters())
    other = tmp_path / "other_classifier.pt"
    other.write_bytes(toy_checkpoint.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match="was trained for classifier toy_mel"):
        load_interpreter(path, other, kind="lmac")
    with pytest.raises(CheckpointError, match="lmac interpreter, not piq"):
        load_interpreter(path, toy_checkpoint, kind="piq")
    assert lmac_variant(ckpt) == "lmac"
    with pytest.raises(ConfigError, match="block outputs"):
        lmac_explain(loaded, model, torch.zeros(1, 1, 64, 201) - 50)  # a 2-s clip: other block shapes


def test_lmac_explain_ignores_the_target_and_warns_when_it_is_not_the_prediction(toy, recwarn):
    net, model, x = _net(toy), toy["model"], toy["x"]
    pred = toy["logits"].argmax(1)
    mask, amap = lmac_explain(net, model, x, pred)
    assert not recwarn.list
    with pytest.warns(UserWarning, match="6 of 6 targets differ"):
        other_mask, other_map = lmac_explain(net, model, x, (pred + 1) % 3)
    assert torch.equal(mask, other_mask) and torch.equal(amap, other_map)
    with pytest.raises(ConfigError, match="2 entries for a batch of 6"):
        lmac_explain(net, model, x, [0, 1])
    with pytest.raises(ConfigError, match="\\[batch, 1, n_freq, n_frames\\]"):
        lmac_explain(net, model, x[:, 0])


def test_listenable_audio_uses_the_clips_phase(toy):
    wav = toy["wav"]
    ones = torch.ones(6, 257, CFG.n_frames)
    torch.testing.assert_close(listenable(ones, wav, CFG), wav, atol=1e-4, rtol=0)
    assert float(listenable(0 * ones, wav, CFG).abs().max()) < 1e-6
    with pytest.raises(ConfigError, match="does not match"):
        listenable(ones[:, :, :50], wav, CFG)


def test_train_lmac_and_its_guided_fine_tuning_write_cards_and_resumable_state(tmp_path, esc50_env, toy_checkpoint):
    before = toy_checkpoint.read_bytes()
    cfg = LMACTrainConfig(checkpoint=str(toy_checkpoint), epochs=1, batch_size=6, args={"width": 8})
    out = train_lmac(cfg, tmp_path / "lmac_toy.pt", progress=False)
    assert toy_checkpoint.read_bytes() == before
    ck = read_interpreter(out["path"])
    assert ck["kind"] == "lmac" and lmac_variant(ck) == "lmac" and ck["training"]["guided"] is False
    assert ck["training"]["n_train"] == 18 and ck["training"]["n_val"] == 6
    assert not any(k.startswith(("blocks", "fc", "norm")) for k in ck["state_dict"])  # classifier not saved
    assert (tmp_path / "lmac_toy.pt.state.pt").is_file()
    card = interpreter_card(ck)
    assert "lowest validation loss" in card and "6.4" in card and "`blocks.3`" in card
    ft = LMACTrainConfig(checkpoint=str(toy_checkpoint), epochs=1, batch_size=6, guided=True,
                         init=out["path"], args={"guide": 2.0})
    out_ft = train_lmac(ft, tmp_path / "lmac_ft_toy.pt", progress=False)
    ck_ft = read_interpreter(out_ft["path"])
    assert lmac_variant(ck_ft) == "lmac_ft" and ck_ft["args"]["guide"] == 2.0 and ck_ft["args"]["width"] == 8
    assert ck_ft["training"]["init"]["sha256"] == file_sha256(out["path"])
    assert "L-MAC FT" in interpreter_card(ck_ft) and "different class" in interpreter_card(ck_ft)
    with pytest.raises(CheckpointError, match="another training run \\(differs in \\['lr'\\]\\)"):
        train_lmac(LMACTrainConfig(checkpoint=str(toy_checkpoint), epochs=1, batch_size=6, lr=0.5,
                                   args={"width": 8}), tmp_path / "lmac_toy.pt", progress=False)
    again = train_lmac(LMACTrainConfig(checkpoint=str(toy_checkpoint), epochs=1, batch_size=6, max_minutes=9.0,
                                       args={"width": 8}), tmp_path / "lmac_toy.pt", progress=False)
    assert again["sessions"] == 2 and again["history"] == out["history"]  # finished: nothing retrained
    with pytest.raises(ConfigError, match="give init="):
        LMACTrainConfig(guided=True).validate()
    with pytest.raises(ConfigError, match="exclude the test fold 5"):
        LMACTrainConfig(val_folds=(5,)).validate()


@pytest.mark.slow
def test_train_lmac_notebook_runs_headless(tmp_path, synthetic_root, toy_checkpoint, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("ESC50_ROOT", str(synthetic_root))
    out = tmp_path / "lmac_toy_mel.pt"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "train_lmac.ipynb"), str(tmp_path / "train_lmac.out.ipynb"),
        parameters={"checkpoint": str(toy_checkpoint), "out": str(out), "epochs": 1, "batch_size": 4,
                    "args": {"width": 8}},
        cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
    ck = read_interpreter(out)
    assert ck["kind"] == "lmac" and ck["training"]["epochs_run"] == 1
    assert "L-MAC interpreter for `toy_mel`" in out.with_suffix(".md").read_text()
    executed = json.loads((tmp_path / "train_lmac.out.ipynb").read_text())
    assert "lowest validation loss" in json.dumps([c.get("outputs") for c in executed["cells"]])


def test_train_interpreter_hands_kind_lmac_to_train_lmac(monkeypatch):
    import audiointerp.learned.training as training
    from audiointerp.learned import InterpreterTrainConfig

    seen = {}
    monkeypatch.setattr(training, "train_lmac", lambda cfg, out, root, progress: seen.update(cfg=cfg, out=out))
    training.train_interpreter(InterpreterTrainConfig(kind="lmac", batch_size=8), "x.pt", progress=False)
    assert isinstance(seen["cfg"], LMACTrainConfig) and seen["cfg"].batch_size == 8 and not seen["cfg"].guided
