"""Tables rebuilt from logs: arrows, best values, splits, exports."""

import pandas as pd
import pytest

from audiointerp.errors import ResultsError
from audiointerp.runner import CSV_COLUMNS
from audiointerp.tables import best_rows, build_tables, correct_incorrect_table, load_results, mean_table, to_markdown


def write_fake_results(root):
    """Two methods x two masks x 4 clips with known values."""
    for method, base in (("saliency", 0.1), ("gradcam", 0.3)):
        d = root / "m" / f"{method}_clean" / "csvs"
        d.mkdir(parents=True)
        for mask, off in (("minmax", 0.0), ("bin", 0.05)):
            rows = []
            for s in range(4):
                correct = int(s < 3)
                rows.append({"sample": s, "filename": f"5-{s}-A-0.wav", "label": 0, "pred": 0 if correct else 1,
                             "is_correct": correct, "FF": base + off, "AI": 100.0 * (s == 0), "AD": 10 * base + s,
                             "AG": 1.0, "FidIn": correct, "SPS": 0.2 + off, "COMP": 5.0 - base})
            pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(d / f"{mask}.csv", index=False)


def test_load_and_means(tmp_path):
    write_fake_results(tmp_path)
    df = load_results(tmp_path)
    assert len(df) == 16 and set(df["method"]) == {"saliency", "gradcam"} and set(df["condition"]) == {"clean"}
    assert (df["domain"] == "spectrogram").all()
    t = mean_table(df[df["method"] == "gradcam"], "mask")
    assert list(t.index) == ["minmax", "bin"]  # the standard mask order, not alphabetical
    assert t.loc["bin", "FF"] == pytest.approx(0.35) and t.loc["minmax", "AI"] == pytest.approx(25.0)
    assert t.loc["minmax", "AD"] == pytest.approx(3 + 1.5) and t.loc["minmax", "n"] == 4


def test_best_respects_direction(tmp_path):
    write_fake_results(tmp_path)
    t = mean_table(load_results(tmp_path), "method")
    assert list(t.index) == ["saliency", "gradcam"]
    best = best_rows(t)
    assert best["FF"] == "gradcam"  # higher is better
    assert best["AD"] == "saliency"  # lower is better
    assert best["COMP"] == "gradcam"  # lower is better
    md = to_markdown(t, "t")
    assert "| FF ↑ |" in md and "| AD ↓ |" in md and "**0.325**" in md


def test_correct_vs_incorrect(tmp_path):
    write_fake_results(tmp_path)
    t = correct_incorrect_table(load_results(tmp_path))
    assert t.loc[("saliency", "minmax"), ("correct", "FidIn")] == 1.0
    assert t.loc[("saliency", "minmax"), ("incorrect", "FidIn")] == 0.0
    assert t.loc[("saliency", "minmax"), ("incorrect", "AD")] == pytest.approx(4.0)


def test_build_exports(tmp_path):
    write_fake_results(tmp_path / "res")
    out = build_tables(tmp_path / "res", tmp_path / "sup")
    names = {p.name for p in (tmp_path / "sup").iterdir()}
    assert {"summary.csv", "summary.md", "tables.md", "per_method_m_clean_spectrogram_saliency.md",
            "per_mask_m_clean_spectrogram_bin.csv", "correct_vs_incorrect_m_clean_spectrogram.md"} <= names
    csv = pd.read_csv(tmp_path / "sup" / "summary.csv")
    assert "FF ↑" in csv.columns and "COMP ↓" in csv.columns
    assert "gradcam" in out["summary_markdown"]


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsError, match=str(tmp_path)):
        load_results(tmp_path)
