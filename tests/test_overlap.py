"""The overlap test (audiointerp.overlap): pairs, mixing, dominance, match scores, end to end."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from audiointerp.errors import ConfigError, ResultsError
from audiointerp.overlap import (
    PAIR_COLUMNS,
    SUMMARY_COLUMNS,
    dominance,
    match_scores,
    mix_pair,
    overlap_pairs,
    overlap_test,
    paired_table,
    summary_table,
    write_overlap,
    write_overlap_summaries,
)
from audiointerp.processing import FeatureConfig, mel_filterbank
from audiointerp.stats import bootstrap_ci

CFG = FeatureConfig(kind="mel", duration=1.0)


def sine(freq: float, cfg: FeatureConfig = CFG) -> torch.Tensor:
    t = torch.arange(cfg.n_samples, dtype=torch.float64) / cfg.sample_rate
    return torch.sin(2 * math.pi * freq * t).float()


def test_pairs_are_seeded_distinct_and_of_different_classes():
    labels = np.repeat(np.arange(5), 8)  # 40 clips, 5 classes
    pairs = overlap_pairs(labels, n_pairs=100, seed=3)
    assert pairs.shape == (100, 2) and pairs.dtype == np.int64
    assert np.array_equal(pairs, overlap_pairs(labels, n_pairs=100, seed=3))
    assert not np.array_equal(pairs, overlap_pairs(labels, n_pairs=100, seed=4))
    assert (labels[pairs[:, 0]] != labels[pairs[:, 1]]).all()
    assert len({frozenset(p) for p in pairs.tolist()}) == 100  # no pair twice, in either order
    assert 0 < (pairs[:, 0] > pairs[:, 1]).sum() < 100  # both orders occur: A is not always the lower index


def test_pairs_exhaust_and_reject_impossible_requests():
    labels = np.array([0, 0, 1, 1, 2, 2])  # 15 pairs, 3 of the same class -> 12
    assert len({frozenset(p) for p in overlap_pairs(labels, 12).tolist()}) == 12
    with pytest.raises(ConfigError, match="between 1 and 12.*13"):
        overlap_pairs(labels, 13)
    with pytest.raises(ConfigError, match="between 1 and 0"):
        overlap_pairs(np.zeros(10, dtype=int), 1)


def test_mix_parts_sum_to_the_peak_normalised_mix_at_equal_rms():
    wav_a = torch.stack([sine(440.0), 0.1 * sine(300.0)])
    wav_b = torch.stack([0.3 * sine(3000.0), sine(2000.0)])
    mixed, part_a, part_b = mix_pair(wav_a, wav_b, CFG)
    assert mixed.shape == part_a.shape == part_b.shape == (2, CFG.n_samples)
    torch.testing.assert_close(part_a + part_b, mixed, atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed.abs().amax(1), torch.ones(2))
    rms = lambda x: x.pow(2).mean(1).sqrt()  # noqa: E731
    torch.testing.assert_close(rms(part_a), rms(part_b), rtol=1e-5, atol=0)  # alpha = 0.5: equal RMS
    with pytest.raises(ConfigError, match=r"wav_b must be \[batch, 16000\].*\(2, 100\)"):
        mix_pair(wav_a, wav_b[:, :100], CFG)


@pytest.mark.parametrize("kind", ["mel", "stft"])
def test_dominance_follows_the_clip_that_has_the_energy(kind):
    cfg = replace(FeatureConfig.default(kind), duration=1.0)
    _, part_a, part_b = mix_pair(sine(500.0, cfg)[None], sine(4000.0, cfg)[None], cfg)
    d_a = dominance(part_a, part_b, cfg)
    assert d_a.shape == (1, *cfg.shape)
    assert float(d_a.min()) >= 0.0 and float(d_a.max()) <= 1.0

    def row(freq):  # the feature row of a tone: its STFT bin, or the mel band weighting that bin most
        k = round(freq * cfg.n_fft / cfg.sample_rate)
        return int(mel_filterbank(cfg)[k].argmax()) if kind == "mel" else k

    inner = slice(2, -2)  # the edge frames see the kink of the reflect padding (broadband)
    assert float(d_a[0, 0, row(500.0), inner].min()) > 0.999  # only A sounds at 500 Hz
    assert float(d_a[0, 0, row(4000.0), inner].max()) < 0.001  # only B at 4 kHz


def test_dominance_of_a_silent_bin_is_shared():
    silent = torch.zeros(1, CFG.n_samples)
    d_a = dominance(silent, silent, CFG)
    torch.testing.assert_close(d_a, torch.full_like(d_a, 0.5))


def test_match_scores_reward_a_map_on_a_and_flag_empty_maps():
    torch.manual_seed(0)
    d_a = torch.rand(3, 1, 8, 10)
    attr = torch.stack([d_a[0], 1 - d_a[1], torch.zeros_like(d_a[2])])
    m_a, m_b = match_scores(attr, d_a)
    assert m_a.dtype == np.float64 and m_a.shape == (3,)
    assert m_a[0] > m_b[0] and m_a[1] < m_b[1]
    np.testing.assert_allclose(m_a[:2] + m_b[:2], 1.0)
    assert np.isnan(m_a[2]) and np.isnan(m_b[2])
    # only the positive part counts: negative values on B change nothing
    neg = torch.where(d_a < 0.5, -torch.ones_like(d_a), d_a)
    np.testing.assert_allclose(match_scores(neg, d_a)[0], match_scores(d_a.clamp_min(0) * (d_a >= 0.5), d_a)[0])
    with pytest.raises(ConfigError, match="differ in shape"):
        match_scores(attr[:, :, :4], d_a)


def test_summary_table_counts_and_ci():
    df = pd.DataFrame({"model": "m", "method": "saliency", "pair": range(4), "pred_is_a": [True, True, False, False],
                       "pred_is_b": [False, False, True, False], "match_a": [0.9, 0.2, np.nan, 0.7],
                       "success": [True, False, False, True], "above_uniform": [True, False, False, False]})
    t = summary_table(df, n_resamples=200)
    assert list(t.columns) == SUMMARY_COLUMNS
    row = t.loc[("m", "saliency")]
    assert row["n"] == 4 and row["empty maps"] == 1
    assert row["success"] == 0.5 and row["success lo"] <= 0.5 <= row["success hi"]
    assert row["success (pred A)"] == 0.5
    assert row["above uniform"] == 0.25 and row["above uniform lo"] <= 0.25 <= row["above uniform hi"]
    assert (row["pred A"], row["pred B"], row["pred other"]) == (0.5, 0.25, 0.25)


def test_overlap_test_end_to_end_and_written_tables(esc50_env, toy_checkpoint, tmp_path):
    df = overlap_test(toy_checkpoint, ["saliency", "nonexistent"], n_pairs=4, seed=1, batch=3, progress=False,
                      skip_unavailable=True)
    assert list(df.columns) == PAIR_COLUMNS
    assert list(df["method"].unique()) == ["saliency", "energy", "random"]
    assert "nonexistent" in df.attrs["skipped"] and "unknown method" in df.attrs["skipped"]["nonexistent"]
    assert set(df.attrs["seconds"]) == {"saliency", "energy", "random"}
    assert (df.groupby("method")["pair"].apply(list) == [[0, 1, 2, 3]] * 3).all()
    assert (df["label_a"] != df["label_b"]).all() and (df["model"] == "toy_mel").all()
    assert (df["above_uniform"] == (df["match_a"] > df["share_a"])).all() and df["share_a"].between(0, 1).all()
    assert df["file_a"].str.startswith("5-").all()  # fold 5
    ok = df["match_a"].notna()
    np.testing.assert_allclose(df.loc[ok, "match_a"] + df.loc[ok, "match_b"], 1.0)
    assert (df["success"] == (df["match_a"] > df["match_b"])).all()
    assert (df["pred_is_a"] == (df["pred_mix"] == df["label_a"])).all()
    # the same seed gives the same pairs, predictions and random baseline
    again = overlap_test(toy_checkpoint, ["saliency"], n_pairs=4, seed=1, batch=4, progress=False)
    pd.testing.assert_frame_equal(again, df)
    with pytest.raises(ConfigError, match="unknown method"):
        overlap_test(toy_checkpoint, ["nonexistent"], n_pairs=2, progress=False)

    paths = write_overlap(df, tmp_path, n_resamples=100)
    assert [p.name for p in paths["pairs"]] == ["overlap_pairs_toy_mel.csv"] and paths["md"].is_file()
    other = df.assign(model="toy_stft")
    write_overlap(other, tmp_path, n_resamples=100)
    write_overlap(df[df["method"] != "saliency"], tmp_path, n_resamples=100)  # re-run of one model, fewer methods
    summary = pd.read_csv(tmp_path / "overlap.csv", index_col=[0, 1])
    methods = ("saliency", "energy", "random")
    assert set(summary.index) == {(m, meth) for m in ("toy_mel", "toy_stft") for meth in methods}
    assert (summary["n"] == 4).all()
    kept = pd.read_csv(tmp_path / "overlap_pairs_toy_mel.csv")
    pd.testing.assert_frame_equal(kept, pd.read_csv(tmp_path / "overlap_pairs_toy_stft.csv").assign(model="toy_mel"))
    swapped = df[df["method"] != "saliency"].assign(file_a=df["file_b"], file_b=df["file_a"])
    write_overlap(swapped, tmp_path, n_resamples=100)  # other pairs: the model's old rows all go
    assert set(pd.read_csv(tmp_path / "overlap_pairs_toy_mel.csv")["method"]) == {"energy", "random"}
    md = (tmp_path / "overlap.md").read_text()
    assert md.startswith("**Overlap test**")
    assert re.search(r"^\| toy_stft \| saliency \| 4 \| [01](\.\d+)? \[[01](\.\d+)?, [01](\.\d+)?\] \|", md, re.M)


def test_paired_table_compares_every_method_with_the_leader_on_the_same_pairs(tmp_path):
    def rows(method, above, success, pairs=range(4)):
        return pd.DataFrame({"model": "m", "method": method, "pair": list(pairs), "file_a": [f"a{i}" for i in pairs],
                             "file_b": [f"b{i}" for i in pairs], "above_uniform": above, "success": success})

    df = pd.concat([rows("gradcam", [True, True, True, False], [True, True, False, False]),
                    rows("saliency", [True, False, False, False], [True, True, True, False]),
                    rows("shap", [True, True, True], [True, True, True], pairs=range(3)),  # one pair missing
                    rows("random", [True, True, True, True], [True, True, True, True])], ignore_index=True)
    t = paired_table(df, n_resamples=200)
    lead = t["versus"].iloc[0]
    assert (t["versus"] == lead).all() and lead not in t.index.get_level_values("method")
    assert lead == "shap"  # highest above-uniform fraction among non-baselines (3 of 3)
    row = t.loc[("m", "gradcam")]
    assert row["n"] == 3  # the common pairs only
    assert row["Δ above uniform"] == pytest.approx(0.0) and row["Δ success"] == pytest.approx(-1 / 3)
    assert t.loc[("m", "random"), "n"] == 3  # baselines are compared, never lead
    mean, lo, hi = bootstrap_ci(np.array([0.0, -1.0, -1.0]), n_resamples=200)
    saliency = t.loc[("m", "saliency")]
    assert (saliency["Δ above uniform"], saliency["Δ above uniform lo"], saliency["Δ above uniform hi"]) == \
        pytest.approx((mean, lo, hi))
    with pytest.raises(ResultsError, match="no overlap_pairs"):
        write_overlap_summaries(tmp_path)
    (df.assign(label_a=0, label_b=1, pred_mix=0, pred_is_a=True, pred_is_b=False, share_a=0.5, match_a=0.6,
               match_b=0.4)[PAIR_COLUMNS].to_csv(tmp_path / "overlap_pairs_m.csv", index=False))
    paths = write_overlap_summaries(tmp_path, n_resamples=200)
    assert "paired with the leading method" in paths["md"].read_text() and paths["paired"].is_file()
