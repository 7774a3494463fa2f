"""Paired differences between methods (audiointerp.differences): exact values on tiny tables."""

import numpy as np
import pandas as pd
import pytest
from test_tables import write_grid

from audiointerp.differences import (
    SUPPORTED,
    clip_means,
    difference_display,
    paired_difference_table,
)
from audiointerp.errors import ConfigError
from audiointerp.metrics import METRIC_NAMES
from audiointerp.stats import bootstrap_ci
from audiointerp.tables import build_tables, load_results


def long_table(ff_a, ff_b, extra_clip_for=None):
    """Two methods (saliency, gradcam) x masks (bin, minmax) over clips; gradcam also a ``native`` mask.

    Per clip i the masks of method X hold FF = ff_X[i] - 0.1 (bin) and ff_X[i] + 0.1 (minmax), so the clip's
    mask mean is ff_X[i]; the native mask holds 9.0 (it must be left out). AD = 100 * FF; other metrics 0.
    """
    rows = []
    for method, ffs in (("saliency", ff_a), ("gradcam", ff_b)):
        n = len(ffs) + (1 if extra_clip_for == method else 0)
        for i in range(n):
            ff = ffs[i] if i < len(ffs) else 0.5
            masks = [("bin", ff - 0.1), ("minmax", ff + 0.1)] + ([("native", 9.0)] if method == "gradcam" else [])
            for mask, v in masks:
                row = {"model": "m", "condition": "clean", "domain": "spectrogram", "method": method, "mask": mask,
                       "filename": f"5-{i}-A-0.wav", "clip_digest": f"d{i}", **{k: 0.0 for k in METRIC_NAMES}}
                row["FF"], row["AD"] = v, 100.0 * v
                rows.append(row)
    return pd.DataFrame(rows)


def test_clip_means_average_the_shared_masks_only():
    per = clip_means(long_table([0.2, 0.4], [0.1, 0.1]))
    g = per[per["method"] == "gradcam"]
    assert np.allclose(g["FF"], [0.1, 0.1]) and (g["masks"] == 2).all()
    assert np.allclose(per[per["method"] == "saliency"]["AD"], [20.0, 40.0])


def test_paired_difference_is_the_mean_of_per_clip_differences_with_the_paired_bootstrap():
    a, b = [0.2, 0.5, 0.3, 0.9, 0.4], [0.1, 0.1, 0.4, 0.2, 0.3]
    t = paired_difference_table(long_table(a, b), metrics=["FF", "AD"], n_resamples=500, seed=3)
    row = t.loc[("m", "clean", "spectrogram", "saliency", "gradcam")]
    d = np.subtract(a, b)
    assert row["FF"] == pytest.approx(d.mean(), abs=1e-12)
    assert row["AD"] == pytest.approx(100 * d.mean(), abs=1e-9)
    mean, lo, hi = bootstrap_ci(d, n_resamples=500, seed=3)  # the same draws: the same bounds
    assert (row["FF lo"], row["FF hi"]) == pytest.approx((lo, hi), abs=1e-12)
    assert row["clips"] == 5 and row["clips A only"] == 0 and row["clips B only"] == 0


def test_a_constant_difference_has_a_zero_width_ci_and_is_marked_supported():
    t = paired_difference_table(long_table([0.3, 0.6, 0.2], [0.1, 0.4, 0.0]), metrics=["FF"])
    row = t.iloc[0]
    assert row["FF"] == pytest.approx(0.2) and row["FF lo"] == pytest.approx(0.2) and row["FF hi"] == pytest.approx(0.2)
    assert row["FF hi"] - row["FF lo"] < 1e-12
    shown = difference_display(t)
    assert list(shown.columns) == ["Δ FF ↑", "clips"]
    assert shown.iloc[0]["Δ FF ↑"] == f"+0.200 [+0.200, +0.200] {SUPPORTED}"


def test_a_ci_across_zero_is_not_marked_and_ad_points_down():
    t = paired_difference_table(long_table([0.3, 0.1, 0.5, 0.2], [0.1, 0.3, 0.2, 0.4]), metrics=["FF", "AD"])
    shown = difference_display(t)
    assert "Δ AD ↓" in shown.columns
    assert not shown.iloc[0]["Δ FF ↑"].endswith(SUPPORTED)


def test_only_common_clips_are_compared_and_the_others_counted():
    t = paired_difference_table(long_table([0.2, 0.4], [0.1, 0.1], extra_clip_for="gradcam"), metrics=["FF"])
    row = t.iloc[0]
    assert row["clips"] == 2 and row["clips A only"] == 0 and row["clips B only"] == 1
    assert row["FF"] == pytest.approx(0.2)
    assert "clips B only" in difference_display(t).columns


def test_bad_pairs_are_clear_errors():
    df = long_table([0.2], [0.1])
    with pytest.raises(ConfigError, match="lime"):
        paired_difference_table(df, pairs=[("saliency", "lime")])
    with pytest.raises(ConfigError, match="two different methods"):
        paired_difference_table(df, pairs=[("saliency", "saliency")])
    with pytest.raises(ConfigError, match="XYZ"):
        paired_difference_table(df, metrics=["XYZ"])
    t = paired_difference_table(df, pairs=[("gradcam", "saliency")], metrics=["FF"], n_resamples=0)
    assert t.index[0][3:] == ("gradcam", "saliency") and t.iloc[0]["FF"] == pytest.approx(-0.1)
    assert np.isnan(t.iloc[0]["FF lo"])


def test_build_tables_writes_the_differences_per_model_and_condition(tmp_path):
    write_grid(tmp_path / "results")
    out = build_tables(tmp_path / "results", tmp_path / "sup", mask="bin", n_resamples=200, figures=False)
    diffs = out["differences"]
    # write_grid: saliency FF = 0.1 + off, gradcam 0.3 + off, in every cell: saliency - gradcam = -0.2 exactly
    assert np.allclose(diffs["FF"], -0.2) and (diffs["clips"] == 4).all()
    assert len(diffs) == 4  # 2 conditions x 2 domains x 1 pair
    md = (tmp_path / "sup" / "differences" / "m_clean.md").read_text()
    assert "-0.200 [-0.200, -0.200] *" in md and "Δ AD ↓" in md
    assert (tmp_path / "sup" / "differences" / "m_white_snr0dB.csv").is_file()
    assert "differences/m_clean.md" in (tmp_path / "sup" / "tables.md").read_text()
    again = load_results(tmp_path / "results")
    assert paired_difference_table(again, n_resamples=200).equals(diffs)


def test_paper_tables_are_method_by_mask_slices_of_the_cells(tmp_path):
    write_grid(tmp_path / "results")
    out = build_tables(tmp_path / "results", tmp_path / "sup", mask="bin", n_resamples=200, figures=False)
    paper = out["paper"]
    assert set(paper) == {("m", c, d) for c in ("clean", "white_snr0dB") for d in ("spectrogram", "audio")}
    t = paper[("m", "clean", "spectrogram")]
    assert t.index.names == ["method", "mask"] and len(t) == 4
    # write_grid: FF = base + off (saliency 0.1, gradcam 0.3; minmax +0, bin +0.05) in the clean spectrogram cell
    assert t.loc[("gradcam", "bin"), "FF"] == pytest.approx(0.35)
    assert t.loc[("saliency", "minmax"), "FF"] == pytest.approx(0.1)
    md = (tmp_path / "sup" / "paper" / "m_clean_spectrogram.md").read_text()
    assert "| method | mask |" in md
    assert "prior art" in (tmp_path / "sup" / "tables.md").read_text()


def test_method_labels_become_portable_file_names():
    from audiointerp.tables import _safe

    assert _safe("lime (n1000)") == "lime-n1000"
    assert _safe("captum:IntegratedGradients") == "captum-IntegratedGradients"
    assert _safe("white_snr0dB") == "white_snr0dB"


def test_native_masks_are_compared_with_every_methods_mask_pair_by_pair():
    from audiointerp.differences import native_difference_table

    df = long_table([0.2, 0.4, 0.6], [0.1, 0.1, 0.1])  # gradcam has a native mask with FF 9.0 on every clip
    df = df.assign(mask=df["mask"].replace({"bin": "topK_30_pos"}))
    t = native_difference_table(df, mask="topK_30_pos", metrics=["FF"], n_resamples=100)
    assert list(t.index.get_level_values("method A").unique()) == ["gradcam (native)"]
    assert set(t.index.get_level_values("method B")) == {"saliency", "gradcam"}
    # saliency's topK_30_pos FF = ff - 0.1 per clip: 9.0 - (0.1, 0.3, 0.5) -> mean 8.7
    assert t.xs("saliency", level="method B")["FF"].iloc[0] == pytest.approx(8.7)
    assert t.xs("gradcam", level="method B")["FF"].iloc[0] == pytest.approx(9.0)
    assert (t["clips"] == 3).all()
    assert native_difference_table(df[df["mask"] != "native"], metrics=["FF"]).empty
    with pytest.raises(ConfigError, match="mask"):
        native_difference_table(df, mask="topK_99")
