"""L2I and PIQ (audiointerp.learned): shapes, masks, losses, checkpoints, the runner path."""

from __future__ import annotations

import copy

import pytest
import torch

from audiointerp.errors import CheckpointError, ConfigError
from audiointerp.learned import (
    HiddenMap,
    InterpreterData,
    L2IInterpreter,
    energy_target,
    fit_interpreter,
    load_interpreter,
    match_size,
    new_interpreter,
    save_interpreter,
)
from audiointerp.masks import apply_log1p_mask
from audiointerp.models import load_classifier
from audiointerp.processing import (
    FeatureConfig,
    features,
    inverse_log1p_stft,
    linear_to_feature_grid,
    log1p_stft,
    magnitude_to_features,
)
from audiointerp.provenance import file_sha256
from audiointerp.scoring import explain

CFG = FeatureConfig(kind="mel", duration=1.0)  # the toy classifier's features: 64 x 101, STFT 257 x 101


@pytest.fixture(scope="module")
def toy(toy_checkpoint):
    """(model, cfg, features x [6,1,64,101], waveforms [6, n], hidden map, logits)."""
    model, ex, _ = load_classifier(toy_checkpoint)
    for p in model.parameters():
        p.requires_grad_(False)
    t = torch.arange(ex.cfg.n_samples) / ex.cfg.sample_rate
    g = torch.Generator().manual_seed(0)
    wav = torch.stack([0.5 * torch.sin(2 * torch.pi * f * t) for f in (300, 700, 1500, 2500, 4000, 6000)])
    wav = wav + 0.05 * torch.randn(wav.shape, generator=g)
    x = features(wav, ex.cfg)[0]
    with torch.no_grad():
        logits, hidden = HiddenMap(model)(x)
    return model, ex.cfg, x, wav, hidden, logits


def _W(k=6, seed=0):
    return torch.rand(257, k, generator=torch.Generator().manual_seed(seed))


def _data(toy):
    _, cfg, _, wav, hidden, logits = toy
    return InterpreterData(hidden, logits, log1p_stft(wav, cfg)[0])


def test_hidden_map_shape_and_hook_removed(toy):
    model, cfg, x, _, hidden, logits = toy
    assert hidden.shape == (6, 8, 8, 12) and logits.shape == (6, 3)
    assert not model.cam_layer._forward_hooks
    torch.testing.assert_close(logits, model(x))


def test_match_size_keeps_every_frame_and_refuses_wiring_errors():
    for t in (96, 101, 313, 501):
        y = match_size(torch.ones(2, 3, 62), (t,), max_ratio=16)
        assert y.shape == (2, 3, t) and torch.all(y == 1)  # every frame has a value, none zero-padded
    assert match_size(torch.ones(1, 1, 64, 496), (257, 501)).shape == (1, 1, 257, 501)
    with pytest.raises(ConfigError, match="too far"):
        match_size(torch.ones(1, 1, 10), (501,))


@pytest.mark.parametrize("kind", ["l2i", "piq"])
def test_interpreter_output_covers_every_stft_frame(toy, kind):
    _, cfg, _, _, hidden, logits = toy
    net = new_interpreter(kind, cfg, hidden.shape[1:], 3, _W())
    mask, amap = net.explain(hidden, logits.argmax(1))
    assert mask.shape == amap.shape == (6, 257, cfg.n_frames)  # 101 frames: none dropped
    assert float(mask.detach().min()) >= 0 and float(mask.detach().max()) <= 1


def test_vq_partition_gives_each_class_only_its_own_keys(toy):
    _, cfg, _, _, hidden, _ = toy
    torch.manual_seed(0)
    net = new_interpreter("piq", cfg, hidden.shape[1:], 3, keys_per_class=4, dim=16, width=16)
    z_e = net.encode(hidden)
    for c in range(3):
        target = torch.full((6,), c)
        z_q, index = net.quantise(z_e, target)
        assert torch.all(index // 4 == c)
        keys = net.codebook.weight[c * 4:(c + 1) * 4]
        torch.testing.assert_close(z_q.permute(0, 2, 3, 1).reshape(-1, 16), keys[(index - 4 * c).reshape(-1)])
        # the nearest key of the class: no other key of that class is closer
        d = torch.cdist(z_e.permute(0, 2, 3, 1).reshape(-1, 16), keys)
        assert torch.all(d.gather(1, (index - 4 * c).reshape(-1, 1)) <= d.min(1, keepdim=True).values + 1e-6)
    mixed = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.all(net.quantise(z_e, mixed)[1] // 4 == mixed[:, None, None])


def test_vq_straight_through_reaches_the_encoder(toy):
    _, cfg, _, _, hidden, logits = toy
    net = new_interpreter("piq", cfg, hidden.shape[1:], 3, keys_per_class=4, dim=16, width=16)
    net(hidden, logits.argmax(1))["logits"].sum().backward()
    assert net.adapter[0].weight.grad is not None and net.adapter[0].weight.grad.abs().sum() > 0


def test_l2i_ratio_mask_in_unit_interval_and_components_sum_below_one(toy):
    _, cfg, _, _, hidden, logits = toy
    torch.manual_seed(0)
    net = new_interpreter("l2i", cfg, hidden.shape[1:], 3, _W(), width=16)
    H = net.activations(hidden) + 0.01  # every component active
    parts = net.component_masks(H)
    assert parts.shape == (6, 6, 257, cfg.n_frames)
    assert float(parts.detach().min()) >= 0 and float(parts.detach().sum(1).max()) <= 1 + 1e-6
    S = torch.tensor([[1.0, 0, 1, 0, 0, 1]]).expand(6, 6)
    mask = net.ratio_mask(H, S)
    assert float(mask.min()) >= 0 and float(mask.max()) <= 1 + 1e-6
    torch.testing.assert_close(mask, (parts * S[:, :, None, None]).sum(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net.ratio_mask(H, torch.ones(6, 6)), torch.ones(6, 257, cfg.n_frames),
                               atol=1e-4, rtol=0)


def test_l2i_relevance_selection_is_never_empty():
    net = L2IInterpreter(_W(4), (2, 1, 3), 5, 2, width=4)
    with torch.no_grad():
        net.theta.weight.copy_(torch.tensor([[1.0, -1.0, 0.5, 0.1], [-1.0, -2.0, -0.5, -3.0]]))
    H = torch.ones(2, 4, 5)
    r = net.relevance(H, torch.tensor([0, 1]))
    torch.testing.assert_close(r, torch.tensor([[1.0, -1.0, 0.5, 0.1], [-1.0, -2.0, -0.5, -3.0]]))
    S = net.selected(r)
    assert S.tolist() == [[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]]  # > 0.2 max; else the top one


def test_fidelity_term_applies_softmax_once():
    net = L2IInterpreter(_W(4), (2, 1, 3), 5, 3, width=4)
    hidden, L = torch.randn(2, 2, 1, 3), torch.rand(2, 257, 5)
    logits = torch.tensor([[3.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    H = net.activations(hidden)
    q = torch.softmax(logits, 1)
    expected = -(q * torch.log_softmax(net.surrogate(H), 1)).sum(1).mean()
    torch.testing.assert_close(net.losses(hidden, L, logits)["fidelity"], expected)


@pytest.mark.parametrize("kind, terms", [("l2i", ["reconstruction", "sparsity", "fidelity"]),
                                         ("piq", ["mask", "codebook", "commitment"])])
def test_a_few_steps_lower_each_loss(toy, kind, terms):
    _, cfg, _, wav, hidden, logits = toy
    L = log1p_stft(wav, cfg)[0]
    for term in ["total", *terms]:
        torch.manual_seed(0)
        net = new_interpreter(kind, cfg, hidden.shape[1:], 3, _W(), width=16)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        before = float(net.losses(hidden, L, logits)[term])
        for _ in range(5):
            opt.zero_grad()
            net.losses(hidden, L, logits)[term].backward()
            opt.step()
        assert float(net.losses(hidden, L, logits)[term]) < before, term


def test_energy_target_thresholds_each_clip_at_its_own_max():
    L = torch.tensor([[[0.0, 1.0], [0.3, 0.4]], [[10.0, 3.0], [3.6, 0.0]]])
    assert energy_target(L).tolist() == [[[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]]


def test_fit_keeps_the_best_validation_epoch_not_the_last(toy, monkeypatch):
    import audiointerp.learned.training as learned

    data = _data(toy)
    torch.manual_seed(0)
    net = new_interpreter("piq", toy[1], data.hidden.shape[1:], 3, keys_per_class=2, dim=8, width=8)
    scripted = iter([3.0, 1.0, 2.0, 4.0])
    monkeypatch.setattr(learned, "_evaluate", lambda *a, **k: {"total": next(scripted)})
    states = []
    out = fit_interpreter(net, data, data, epochs=4, batch_size=3, lr=1e-2,
                          on_epoch=lambda row: states.append(copy.deepcopy(net.state_dict())))
    assert out["best_epoch"] == 2 and out["epochs_run"] == 4
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, states[1][k])
    assert any(not torch.equal(v, states[3][k]) for k, v in net.state_dict().items())


def test_stop_reason_patience_budget_and_maximum():
    from audiointerp.learned.training import stop_reason

    hist = [{"epoch": e, "val_total": v, "minutes": e * 1.0} for e, v in enumerate([3.0, 1.0, 2.0, 1.5, 1.2], 1)]
    assert stop_reason([], 10, 60, 2) is None
    assert stop_reason(hist[:3], 10, 60, 2) is None  # lowest at epoch 2, one epoch without a fall
    assert stop_reason(hist[:4], 10, 60, 2) == "patience"  # two epochs without a fall
    assert stop_reason(hist, 10, 60, None) is None
    assert stop_reason(hist, 10, 5.0, None) == "max_minutes"
    assert stop_reason(hist, 5, 60, None) == "epochs"


def test_fit_stops_when_the_validation_loss_stops_falling(toy, monkeypatch):
    import audiointerp.learned.training as learned

    data = _data(toy)
    torch.manual_seed(0)
    net = new_interpreter("piq", toy[1], data.hidden.shape[1:], 3, keys_per_class=2, dim=8, width=8)
    scripted = iter([3.0, 1.0, 1.5, 2.0, 0.5, 0.1])
    monkeypatch.setattr(learned, "_evaluate", lambda *a, **k: {"total": next(scripted)})
    out = fit_interpreter(net, data, data, epochs=6, batch_size=3, lr=1e-2, patience=2)
    assert out["epochs_run"] == 4 and out["best_epoch"] == 2 and out["stopped"] == "patience"
    with pytest.raises(ConfigError, match="patience must be >= 1"):
        learned.InterpreterTrainConfig(patience=0).validate()


def test_fit_interpreter_resumes_after_an_interruption_with_the_uninterrupted_result(toy, tmp_path):
    data = _data(toy)
    kw = dict(epochs=3, batch_size=3, lr=1e-2, seed=5, identity={"run": "a"})

    def net(seed):
        torch.manual_seed(seed)
        return new_interpreter("piq", toy[1], data.hidden.shape[1:], 3, keys_per_class=2, dim=8, width=8)

    full_net = net(2)
    full = fit_interpreter(full_net, data, data, state_path=tmp_path / "full.state.pt", **kw)

    def crash(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt("killed")

    state_path = tmp_path / "resumed.state.pt"
    with pytest.raises(KeyboardInterrupt):
        fit_interpreter(net(2), data, data, state_path=state_path, on_epoch=crash, **kw)
    resumed_net = net(9)  # another initialisation: the saved state replaces it
    resumed = fit_interpreter(resumed_net, data, data, state_path=state_path, **kw)
    assert resumed["sessions"] == 2 and resumed["epochs_run"] == full["epochs_run"] == 3
    for a, b in zip(resumed["history"], full["history"]):
        assert {k: v for k, v in a.items() if k != "minutes"} == pytest.approx(
            {k: v for k, v in b.items() if k != "minutes"})
    for k, v in full_net.state_dict().items():
        torch.testing.assert_close(resumed_net.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="another training run"):
        fit_interpreter(net(0), data, data, state_path=state_path, **{**kw, "identity": {"run": "b"}})


def test_magnitude_features_and_masked_audio_match_the_feature_path(toy):
    _, cfg, x, wav, _, _ = toy
    L, spec = log1p_stft(wav, cfg)
    ones = torch.ones_like(L)
    mag_in, mag_out = apply_log1p_mask(L, ones)
    # compared in power relative to the peak (a bin far below it may move by a few hundredths of a dB)
    p, q = 10 ** (magnitude_to_features(mag_in, cfg) / 10), 10 ** (x / 10)
    assert ((p - q).abs() <= 1e-5 * q.flatten(1).amax(1).view(-1, 1, 1, 1)).all()
    assert float(mag_out.abs().max()) == 0.0
    audio = inverse_log1p_stft(ones * L, torch.angle(spec), cfg.n_samples, cfg)
    assert audio.shape == wav.shape
    torch.testing.assert_close(audio, wav, atol=1e-4, rtol=0)
    assert float(inverse_log1p_stft(0 * L, torch.angle(spec), cfg.n_samples, cfg).abs().max()) < 1e-6


def test_linear_to_feature_grid_keeps_constants():
    a = torch.full((2, 1, 257, 7), 0.3)
    torch.testing.assert_close(linear_to_feature_grid(a, CFG), torch.full((2, 1, 64, 7), 0.3))
    assert linear_to_feature_grid(a, FeatureConfig.stft_default()) is a


def _save(tmp_path, toy, toy_checkpoint, kind, active: bool = False):
    """Save a seeded interpreter for the toy classifier (``active``: L2I activations >= 1 everywhere)."""
    _, cfg, _, _, hidden, _ = toy
    torch.manual_seed(1)
    net = new_interpreter(kind, cfg, hidden.shape[1:], 3, _W(), width=16)
    if active:
        with torch.no_grad():
            net.psi_out[-1].bias.fill_(1.0)
    path = tmp_path / f"{kind}_toy_mel.pt"
    save_interpreter(path, net, {"path": "toy_mel.pt", "sha256": file_sha256(toy_checkpoint), "name": "toy_mel"},
                     cfg, training={"history": []})
    return net, path


@pytest.mark.parametrize("kind", ["l2i", "piq"])
def test_saved_interpreter_reloads_and_gives_the_same_masks(tmp_path, toy, toy_checkpoint, kind):
    from audiointerp.interpret import make_method

    model, cfg, x, _, hidden, logits = toy
    net, path = _save(tmp_path, toy, toy_checkpoint, kind)
    target = logits.argmax(1)
    with torch.no_grad():
        want_mask, want_map = net.eval().explain(hidden, target)
    method = make_method(kind, model, interpreter=path, checkpoint=toy_checkpoint, features=cfg)
    expl = explain(method, x, target)
    native, attr = expl.native, expl.attribution
    torch.testing.assert_close(native[:, 0], want_mask)
    assert attr.shape == x.shape
    torch.testing.assert_close(attr, linear_to_feature_grid(want_map[:, None], cfg))
    torch.testing.assert_close(method.attribute(x, target), attr)
    torch.testing.assert_close(method.native_mask(x, target), native)


def test_bad_or_mismatched_checkpoints_give_one_clear_error(tmp_path, toy, toy_checkpoint):
    from audiointerp.interpret import make_method

    model, cfg, x, _, _, _ = toy
    _, path = _save(tmp_path, toy, toy_checkpoint, "piq")
    with pytest.raises(CheckpointError, match="not found"):
        load_interpreter(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_interpreter(junk)
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an audiointerp interpreter"):
        load_interpreter(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="piq interpreter, not l2i"):
        make_method("l2i", model, interpreter=path)
    other = tmp_path / "other_classifier.pt"
    other.write_bytes(toy_checkpoint.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match="was trained for classifier toy_mel"):
        make_method("piq", model, interpreter=path, checkpoint=other)
    with pytest.raises(CheckpointError, match="trained on features"):
        make_method("piq", model, interpreter=path, features=FeatureConfig(kind="mel"))
    broken = torch.load(path, weights_only=False)
    broken["state_dict"].pop("codebook.weight")
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_interpreter(tmp_path / "broken.pt")
    method = make_method("piq", model, interpreter=path)
    with pytest.raises(ConfigError, match="hidden map"):
        method.attribute(torch.zeros(1, 1, 64, 201) - 50, [0])  # 2-s clip: another hidden map


def test_train_interpreter_freezes_the_classifier(tmp_path, esc50_env, toy_checkpoint):
    from audiointerp.learned import InterpreterTrainConfig, interpreter_card, read_interpreter, train_interpreter
    from audiointerp.nmf import NMFDictionary

    before = toy_checkpoint.read_bytes()
    model, _, _ = load_classifier(toy_checkpoint)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    NMFDictionary(_W(), CFG, {}).save(tmp_path / "dict.pt")
    cfg = InterpreterTrainConfig(kind="l2i", checkpoint=str(toy_checkpoint), nmf=str(tmp_path / "dict.pt"),
                                 epochs=2, batch_size=4, args={"width": 8})
    out = train_interpreter(cfg, tmp_path / "l2i_toy.pt", progress=False)
    assert toy_checkpoint.read_bytes() == before
    model2, _, _ = load_classifier(toy_checkpoint)
    for k, v in model2.state_dict().items():
        assert torch.equal(v, state[k])
    ck = read_interpreter(out["path"])
    assert not any(k.startswith(("blocks", "fc", "norm")) for k in ck["state_dict"])  # classifier not saved/trained
    assert ck["training"]["n_train"] == 18 and ck["training"]["n_val"] == 6
    assert ck["training"]["best_epoch"] in (1, 2) and len(ck["training"]["history"]) == 2
    assert "lowest validation loss" in interpreter_card(ck)
    assert "stopped at the maximum epochs" in interpreter_card(ck)
    assert (tmp_path / "l2i_toy.pt.state.pt").is_file()  # resumable
    with pytest.raises(ConfigError, match="exclude the test fold 5"):
        InterpreterTrainConfig(train_folds=(1, 2, 5)).validate()


def test_runner_scores_native_masks_with_their_own_synthesis(tmp_path, esc50_env, toy, toy_checkpoint):
    import pandas as pd

    from audiointerp.runner import RunConfig, run
    from audiointerp.scoring import score_masks

    model, cfg, x, wav, _, logits = toy
    # all-ones native mask: x_in is the clip's own features, x_out silence (-100 dB)
    res = score_masks(model, torch.softmax(logits, 1)[:2], x[:2], wav[:2], torch.ones(2, 1, *x.shape[1:]), cfg,
                      native=torch.ones(2, 1, 1, 257, cfg.n_frames))
    torch.testing.assert_close(res.x_in[:, 0], x[:2], atol=1e-3, rtol=1e-4)
    assert float(res.x_out.max()) == -100.0
    assert float(res.scores["audio"]["FidIn"].min()) == 1.0
    with pytest.raises(ConfigError, match="waveforms"):
        score_masks(model, logits[:2], x[:2], None, torch.ones(2, 1, *x.shape[1:]), cfg,
                    native=torch.ones(2, 1, 1, 257, cfg.n_frames))
    _, path = _save(tmp_path, toy, toy_checkpoint, "l2i")
    with pytest.raises(CheckpointError, match="no piq interpreter"):
        RunConfig(checkpoint=str(toy_checkpoint), methods=["piq"], results=str(tmp_path / "r")).validate()
    rc = RunConfig(checkpoint=str(toy_checkpoint), methods=["l2i"], interpreters={"l2i": str(path)}, limit=3,
                   results=str(tmp_path / "r"), masks=["topK_30_pos"])
    run(rc, progress=False)
    folder = tmp_path / "r" / "toy_mel" / "l2i_clean"
    native = pd.read_csv(folder / "csvs" / "native.csv")
    assert len(native) == 6 and set(native.domain) == {"spectrogram", "audio"}
    assert len(pd.read_csv(folder / "csvs" / "topK_30_pos.csv")) == 6
    assert native[["FF", "AI", "AD", "FidIn", "SPS", "COMP"]].notna().all().all()
    # the same results in the tables: native masks get their own table, the summary averages shared masks
    from audiointerp.tables import build_tables

    run(RunConfig(checkpoint=str(toy_checkpoint), methods=["saliency"], limit=3, results=str(tmp_path / "r"),
                  masks=["topK_30_pos"]), progress=False)
    out = build_tables(tmp_path / "r", tmp_path / "sup", n_resamples=20, figures=False)
    assert set(out["summary"].reset_index()["method"]) == {"saliency", "l2i"}
    assert set(out["summary"]["clips"]) == {3} and set(out["summary"]["masks"]) == {1}  # native left out
    native_md = (tmp_path / "sup" / "native_topK_30_pos_audio.md").read_text()
    assert "l2i (native)" in native_md and "saliency" in native_md


def test_explain_clip_scores_a_native_mask_like_the_runner(tmp_path, toy, toy_checkpoint):
    from audiointerp.explore import explain_clip
    from audiointerp.interpret import make_method

    model, cfg, _, wav, _, _ = toy
    _, path = _save(tmp_path, toy, toy_checkpoint, "piq")
    with pytest.raises(ConfigError, match="checkpoint= or its interpreter="):
        make_method("piq", model, features=cfg)
    explainer = make_method("piq", model, features=cfg, interpreter=path, checkpoint=toy_checkpoint)
    extractor = load_classifier(toy_checkpoint)[1]
    e = explain_clip(model, extractor, wav[0], "piq", mask="native", explainer=explainer)
    assert e.mask.shape == (1, 64, cfg.n_frames) and float(e.mask.min()) >= 0 and float(e.mask.max()) <= 1
    assert set(e.scores) == {"spectrogram", "audio"} and e.audio_in.shape == (cfg.n_samples,)
    with pytest.raises(ConfigError, match="mask of their own"):
        explain_clip(model, extractor, wav[0], "saliency", mask="native")


def test_overlap_test_scores_the_map_and_the_native_mask_of_a_learned_method(tmp_path, esc50_env, toy,
                                                                             toy_checkpoint):
    import shutil

    from audiointerp.overlap import overlap_test

    ckpt = tmp_path / "toy_mel.pt"
    shutil.copy(toy_checkpoint, ckpt)  # same bytes, same SHA-256; the interpreter sits next to it
    _, path = _save(tmp_path, toy, toy_checkpoint, "l2i", active=True)
    assert path == tmp_path / "l2i_toy_mel.pt"
    df = overlap_test(ckpt, ["l2i"], n_pairs=3, seed=0, progress=False)
    assert list(df["method"].unique()) == ["l2i", "l2i (native)", "energy", "random"]
    native = df[df["method"] == "l2i (native)"]
    assert native["match_a"].between(0, 1).all() and len(native) == 3
