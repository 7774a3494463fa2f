"""Tables rebuilt from logs: arrows, best values, splits, bootstrap CIs, exports, figures."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from audiointerp.errors import ConfigError, ResultsError
from audiointerp.metrics import METRIC_NAMES
from audiointerp.tables import (
    accuracy_table,
    best_rows,
    bootstrap_ci,
    build_tables,
    cell_table,
    condition_method_table,
    correct_incorrect_table,
    correct_incorrect_tables,
    domain_table,
    load_results,
    mean_table,
    run_table,
    to_latex,
    to_markdown,
)

OLD_COLUMNS = ["sample", "filename", "label", "pred", "is_correct", *METRIC_NAMES]
COLUMNS = ["sample", "filename", "label", "pred", "is_correct", "domain", "recon_snr_db", *METRIC_NAMES]
WHITE = "white_snr0dB"  # a condition label with an underscore


def write_fake_results(root):
    """Old schema (no domain, no recon SNR, no run.json): two methods x two masks x 4 clips."""
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
            pd.DataFrame(rows, columns=OLD_COLUMNS).to_csv(d / f"{mask}.csv", index=False)


def write_grid(root, model="m"):
    """New schema: conditions clean and white_snr0dB x methods saliency, gradcam x masks minmax, bin x
    4 clips x both domains, with run.json (accuracy 0.75 clean, 0.5 white).

    FF = base + off + (0.2 if white) - (0.1 if audio)  (constant per cell);
    AD = 10 * base + s; recon_snr_db = 10 + s; clean: clips 0-2 correct, white: clips 0-1.
    """
    for cond, shift, n_ok in (("clean", 0.0, 3), (WHITE, 0.2, 2)):
        for method, base in (("saliency", 0.1), ("gradcam", 0.3)):
            run = root / model / f"{method}_{cond}"
            (run / "csvs").mkdir(parents=True)
            info = {"model": model, "method": method, "condition": cond, "accuracy": {cond: n_ok / 4},
                    "n_clips_fold": 4, "noise": None if cond == "clean" else
                    {"condition": "white", "file": "/noises/white.wav", "snr_db_used": 0.0}}
            if method == "gradcam":  # an older run.json: identity only under "key"
                info = {"key": {"method": method, "condition": cond}, **{k: v for k, v in info.items()
                                                                          if k not in ("method", "condition")}}
            (run / "run.json").write_text(json.dumps(info))
            for mask, off in (("minmax", 0.0), ("bin", 0.05)):
                rows = []
                for s in range(4):
                    for dom, drop in (("spectrogram", 0.0), ("audio", 0.1)):
                        ok = int(s < n_ok)
                        rows.append({"sample": s, "filename": f"5-{s}-A-0.wav", "label": 0, "pred": 1 - ok,
                                     "is_correct": ok, "domain": dom, "recon_snr_db": 10.0 + s,
                                     "FF": base + off + shift - drop, "AI": 100.0 * (s == 0), "AD": 10 * base + s,
                                     "AG": 1.0 + s * (dom == "audio"), "FidIn": ok, "SPS": 0.2 + off,
                                     "COMP": 5.0 - base})
                pd.DataFrame(rows, columns=COLUMNS).to_csv(run / "csvs" / f"{mask}.csv", index=False)


# --------------------------------------------------------------------------- old behaviour

def test_load_and_means(tmp_path):
    write_fake_results(tmp_path)
    df = load_results(tmp_path)
    assert len(df) == 16 and set(df["method"]) == {"saliency", "gradcam"} and set(df["condition"]) == {"clean"}
    assert (df["domain"] == "spectrogram").all() and df["recon_snr_db"].isna().all()
    t = mean_table(df[df["method"] == "gradcam"], "mask")
    assert list(t.index) == ["minmax", "bin"]  # the standard mask order, not alphabetical
    assert t.loc["bin", "FF"] == pytest.approx(0.35) and t.loc["minmax", "AI"] == pytest.approx(25.0)
    assert t.loc["minmax", "AD"] == pytest.approx(3 + 1.5) and t.loc["minmax", "clips"] == 4


def test_best_respects_direction(tmp_path):
    write_fake_results(tmp_path)
    t = mean_table(load_results(tmp_path), "method")
    assert list(t.index) == ["saliency", "gradcam"]
    best = best_rows(t)
    assert best["FF"] == "gradcam"  # higher is better
    assert best["AD"] == "saliency"  # lower is better
    assert best["COMP"] == "gradcam"  # lower is better
    md = to_markdown(t, "t")
    assert "| FF ↑ |" in md and "| AD ↓ |" in md and "**0.325** [" in md
    assert "| FF ↑ | FF lo |" in to_markdown(t, ci=None)  # the raw columns on request


def test_correct_vs_incorrect(tmp_path):
    write_fake_results(tmp_path)
    t = correct_incorrect_table(load_results(tmp_path))
    assert t.loc[("saliency", "minmax"), ("correct", "FidIn")] == 1.0
    assert t.loc[("saliency", "minmax"), ("incorrect", "FidIn")] == 0.0
    assert t.loc[("saliency", "minmax"), ("incorrect", "AD")] == pytest.approx(4.0)
    assert t.loc[("saliency", "minmax"), ("correct", "clips")] == 3
    assert t.loc[("saliency", "minmax"), ("correct", "AD lo")] <= 2.0 <= t.loc[("saliency", "minmax"), ("correct", "AD hi")]


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsError, match=str(tmp_path)):
        load_results(tmp_path)
    with pytest.raises(ResultsError, match=str(tmp_path)):
        accuracy_table(tmp_path)


# --------------------------------------------------------------------------- bootstrap

def test_bootstrap_ci_properties():
    x = np.random.default_rng(0).normal(1.0, 2.0, 200)
    m, lo, hi = bootstrap_ci(x, seed=0)
    assert m == pytest.approx(x.mean()) and lo < m < hi
    assert bootstrap_ci(x, seed=0) == (m, lo, hi)  # same seed, identical CI
    assert bootstrap_ci(x, seed=1) != (m, lo, hi)
    big = np.random.default_rng(0).normal(1.0, 2.0, 5000)
    _, blo, bhi = bootstrap_ci(big, seed=0)
    assert bhi - blo < (hi - lo) / 3  # narrows like 1/sqrt(n)
    assert bootstrap_ci(np.full(17, 0.1), seed=5) == (0.1, 0.1, 0.1)  # constant: zero width, exact
    assert bootstrap_ci([3.0], seed=0) == (3.0, 3.0, 3.0)
    assert all(np.isnan(bootstrap_ci([], seed=0)))
    _, lo99, hi99 = bootstrap_ci(x, seed=0, confidence=0.99)
    assert lo99 < lo and hi99 > hi
    with pytest.raises(ConfigError, match="confidence"):
        bootstrap_ci(x, confidence=95)


def test_bootstrap_ci_equals_scipy_percentile():
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(2).exponential(size=57)
    _, lo, hi = bootstrap_ci(x, n_resamples=999, seed=3)
    ref = stats.bootstrap((x,), np.mean, n_resamples=999, method="percentile", rng=3, vectorized=True)
    assert lo == pytest.approx(ref.confidence_interval.low, abs=1e-12)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=1e-12)


def test_bootstrap_ci_columns_and_clusters():
    rng = np.random.default_rng(4)
    v = rng.normal(size=(40, 3))
    m, lo, hi = bootstrap_ci(v, seed=7)
    for j in range(3):  # each column as if alone
        assert (m[j], lo[j], hi[j]) == pytest.approx(bootstrap_ci(v[:, j], seed=7), abs=1e-12)
    # one row per cluster: the row bootstrap; two rows per cluster: the mean of each cluster's rows
    assert bootstrap_ci(v[:, 0], seed=7, clusters=np.arange(40)) == pytest.approx(bootstrap_ci(v[:, 0], seed=7))
    pairs = np.repeat(v[:, 0], 2)
    assert bootstrap_ci(pairs, seed=7, clusters=np.repeat(np.arange(40), 2)) == pytest.approx(
        bootstrap_ci(v[:, 0], seed=7), abs=1e-12)


# --------------------------------------------------------------------------- new schema

def test_load_new_schema(tmp_path):
    write_grid(tmp_path)
    df = load_results(tmp_path)
    assert len(df) == 2 * 2 * 2 * 4 * 2
    assert set(df["condition"]) == {"clean", WHITE} and set(df["domain"]) == {"spectrogram", "audio"}
    assert set(df["method"]) == {"saliency", "gradcam"}  # from run.json, top level or "key"
    assert df.loc[df["sample"] == 3, "recon_snr_db"].eq(13.0).all()
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        load_results(tmp_path, model="nope")


def test_identity_from_run_json(tmp_path):
    write_grid(tmp_path)
    run = tmp_path / "m" / "saliency_clean"
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "condition": "pink"}))
    assert "pink" in set(load_results(tmp_path)["condition"])  # run.json wins over the folder name


def test_condition_method_table_values(tmp_path):
    write_grid(tmp_path)
    df = load_results(tmp_path)
    t = condition_method_table(df, "bin", domain="audio")
    assert list(t.index) == [("m", "clean", "saliency"), ("m", "clean", "gradcam"),
                             ("m", WHITE, "saliency"), ("m", WHITE, "gradcam")]
    row = t.loc[("m", WHITE, "gradcam")]
    assert row["FF"] == pytest.approx(0.3 + 0.05 + 0.2 - 0.1)
    assert row["FF lo"] == row["FF"] == row["FF hi"]  # constant over clips: zero-width CI
    assert row["AD"] == pytest.approx(4.5) and row["AG"] == pytest.approx(2.5) and row["clips"] == 4
    _, lo, hi = bootstrap_ci([3.0, 4.0, 5.0, 6.0], seed=0)  # the group's own bootstrap
    assert (row["AD lo"], row["AD hi"]) == pytest.approx((lo, hi))
    md = to_markdown(t, best_within=["model", "condition"])  # best method of each condition
    ff = {tuple(line.split(" | ")[1:3]): line.split(" | ")[3] for line in md.splitlines()[2:]}
    assert ff == {("clean", "saliency"): "0.050 [0.050, 0.050]", ("clean", "gradcam"): "**0.250** [0.250, 0.250]",
                  (WHITE, "saliency"): "0.250 [0.250, 0.250]", (WHITE, "gradcam"): "**0.450** [0.450, 0.450]"}
    with pytest.raises(ConfigError, match="unknown mask 'topK_99'.*bin"):
        condition_method_table(df, "topK_99")
    with pytest.raises(ConfigError, match="unknown domain 'waveform'"):
        condition_method_table(df, "bin", domain="waveform")


def test_domain_table(tmp_path):
    write_grid(tmp_path)
    t = domain_table(load_results(tmp_path), "m", WHITE)
    assert list(t.columns.get_level_values(0).unique()) == ["spectrogram", "audio"]
    assert list(t.index) == [("saliency", "minmax"), ("saliency", "bin"), ("gradcam", "minmax"), ("gradcam", "bin")]
    assert t.loc[("saliency", "bin"), ("spectrogram", "FF")] == pytest.approx(0.35)
    assert t.loc[("saliency", "bin"), ("audio", "FF")] == pytest.approx(0.25)
    assert t.loc[("saliency", "bin"), ("audio", "AG")] == pytest.approx(2.5)
    assert domain_table(load_results(tmp_path), "m").equals(domain_table(load_results(tmp_path), "m", "clean"))
    with pytest.raises(ConfigError, match="unknown condition 'horse'"):
        domain_table(load_results(tmp_path), "m", "horse")


def test_correct_incorrect_every_condition(tmp_path):
    write_grid(tmp_path)
    tabs = correct_incorrect_tables(load_results(tmp_path))
    assert list(tabs) == [("m", "clean", "spectrogram"), ("m", "clean", "audio"),
                          ("m", WHITE, "spectrogram"), ("m", WHITE, "audio")]
    t = tabs[("m", WHITE, "spectrogram")]
    assert t.loc[("gradcam", "bin"), ("correct", "AD")] == pytest.approx(3.5)  # clips 0, 1
    assert t.loc[("gradcam", "bin"), ("incorrect", "clips")] == 2


def test_accuracy_table_reads_run_json(tmp_path):
    write_grid(tmp_path)
    t = accuracy_table(tmp_path)
    assert list(t.index) == [("m", "clean"), ("m", WHITE)]
    assert t.loc[("m", "clean"), "accuracy"] == 0.75 and t.loc[("m", WHITE), "accuracy"] == 0.5
    assert t.loc[("m", "clean"), "clips"] == 4 and t.loc[("m", "clean"), "source"] == "run.json"
    assert (t.loc[("m", "clean"), "accuracy lo"], t.loc[("m", "clean"), "accuracy hi"]) == pytest.approx(
        bootstrap_ci([1.0, 1.0, 1.0, 0.0])[1:])
    assert t.loc[("m", WHITE), "recon_snr_db"] == pytest.approx(11.5)  # dB, one value per clip
    assert (t.loc[("m", WHITE), "recon_snr_db lo"], t.loc[("m", WHITE), "recon_snr_db hi"]) == pytest.approx(
        bootstrap_ci([10.0, 11.0, 12.0, 13.0])[1:])
    assert t.loc[("m", "clean"), "noise"] == "none" and t.loc[("m", WHITE), "noise"] == "white.wav"
    assert t.loc[("m", WHITE), "noise_snr_db"] == 0.0


def test_latex_is_escaped_with_bold_and_arrows(tmp_path):
    write_grid(tmp_path)
    t = condition_method_table(load_results(tmp_path), "bin")
    tex = to_latex(t, "mask bin · spectrogram", label="tab:x", best_within=["model", "condition"])
    assert r"\textbf{0.550}" in tex and r"FF $\uparrow$" in tex and r"AD $\downarrow$" in tex
    assert r"white\_snr0dB" in tex and r"\toprule" in tex and r"\label{tab:x}" in tex
    assert "·" not in tex and "↑" not in tex
    body = tex.split(r"\midrule")[1]
    assert body.count(r"\\") == 4 and "_" not in body.replace(r"\_", "")


def test_build_exports(tmp_path):
    write_grid(tmp_path / "res")
    sup = tmp_path / "sup"
    sup.mkdir()
    for stale in ("per_method_m_clean_spectrogram_saliency.md", "per_mask_m_clean_spectrogram_bin.csv",
                  "correct_vs_incorrect_m_clean_spectrogram.md"):
        (sup / stale).write_text("old layout")
    (sup / "notes.md").write_text("mine")
    out = build_tables(tmp_path / "res", sup, mask="bin", n_resamples=200, seed=0)
    names = {p.relative_to(sup).as_posix() for p in sup.rglob("*") if p.is_file()}
    expected = {"tables.md", "notes.md", "figures/accuracy.png", "figures/conditions_bin_m_spectrogram.png",
                "figures/conditions_bin_m_audio.png", "figures/domains_m.png"}
    for stem in ("summary", "accuracy", "conditions_bin_spectrogram", "conditions_bin_audio", "domains_m_clean",
                 f"domains_m_{WHITE}", "per_mask/minmax_audio", "per_method/m_clean_audio_gradcam",
                 f"correct_vs_incorrect/m_{WHITE}_spectrogram"):
        expected |= {f"{stem}.csv", f"{stem}.md", f"{stem}.tex"}
    assert expected <= names
    assert not any(n.startswith(("per_method_", "per_mask_", "correct_vs_incorrect_")) for n in names)
    for png in out["figures"]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(sup / "summary.csv")
    assert {"FF ↑", "FF lo", "FF hi", "COMP ↓", "clips", "masks", "clip_set"} <= set(csv.columns)
    assert "spectrogram FF ↑" in pd.read_csv(sup / f"domains_m_{WHITE}.csv").columns
    assert r"\textbf" in (sup / "conditions_bin_audio.tex").read_text()
    index = (sup / "tables.md").read_text()
    assert "(per_mask/minmax_audio.md)" in index and "figures/accuracy.png" in index and "| FF ↑ |" in index
    assert "gradcam" in out["summary_markdown"] and out["mask"] == "bin"
    assert {"summary", "per_method", "per_mask", "correct_incorrect", "summary_markdown", "data", "accuracy",
            "conditions", "domains", "cells", "figures"} <= set(out)
    # the tables sliced from the cell table equal the direct computation (same CIs)
    df = out["data"]
    pd.testing.assert_frame_equal(out["conditions"]["audio"],
                                  condition_method_table(df, "bin", domain="audio", n_resamples=200))
    pd.testing.assert_frame_equal(out["per_mask"][("m", WHITE, "audio", "bin")],
                                  mean_table(df[(df["condition"] == WHITE) & (df["domain"] == "audio")
                                                & (df["mask"] == "bin")], "method", n_resamples=200),
                                  check_names=False)
    again = build_tables(tmp_path / "res", tmp_path / "sup2", mask="bin", n_resamples=200, seed=0, figures=False)
    assert (tmp_path / "sup2" / "summary.csv").read_text() == (sup / "summary.csv").read_text()  # seeded
    assert again["figures"] == []


def test_unknown_mask_is_a_clear_error(tmp_path):
    write_grid(tmp_path / "res")
    with pytest.raises(ConfigError, match="unknown mask 'topK_25_pos'; valid masks: bin, minmax"):
        build_tables(tmp_path / "res", tmp_path / "sup", mask="topK_25_pos")
    assert not (tmp_path / "sup").exists()  # nothing written
    with pytest.raises(ConfigError, match="unknown model"):
        build_tables(tmp_path / "res", tmp_path / "sup", model="other", mask="bin")


def test_full_grid_is_fast(tmp_path):
    """A grid shaped like the real one (5 cells x 3 methods x 14 masks x 2 domains), 40 clips."""
    import time

    from audiointerp.masks import MASK_NAMES

    rng = np.random.default_rng(0)
    n = 40
    for model, cond in (("a", "clean"), ("a", "white"), ("a", "room"), ("a", "horse"), ("b", "clean")):
        for method in ("saliency", "gradcam", "shap"):
            run = tmp_path / model / f"{method}_{cond}"
            (run / "csvs").mkdir(parents=True)
            (run / "run.json").write_text(json.dumps({"accuracy": {cond: 0.7}, "n_clips_fold": n}))
            for mask in MASK_NAMES:
                d = pd.DataFrame({c: rng.random(2 * n) for c in METRIC_NAMES})
                d.insert(0, "sample", np.repeat(np.arange(n), 2))
                d.insert(1, "filename", [f"5-{i}-A-0.wav" for i in d["sample"]])
                d.insert(2, "label", 0)
                d.insert(3, "pred", 0)
                d.insert(4, "is_correct", (d["sample"] % 3 > 0).astype(int))
                d.insert(5, "domain", ["spectrogram", "audio"] * n)
                d.insert(6, "recon_snr_db", 20.0)
                d.to_csv(run / "csvs" / f"{mask}.csv", index=False)
    t0 = time.perf_counter()
    out = build_tables(tmp_path, tmp_path / "sup", figures=False)
    assert time.perf_counter() - t0 < 60
    assert len(out["data"]) == 5 * 3 * 14 * n * 2 and len(out["correct_incorrect"]) == 10
    assert len(out["per_method"]) == 30 and len(out["domains"]) == 5


@pytest.mark.slow
def test_tables_notebook_on_fake_results(tmp_path):
    papermill = pytest.importorskip("papermill")
    write_grid(tmp_path / "res")
    papermill.execute_notebook(
        str(REPO / "notebooks" / "tables.ipynb"), str(tmp_path / "tables.out.ipynb"),
        parameters={"results": str(tmp_path / "res"), "out": str(tmp_path / "sup"), "mask": "bin",
                    "n_resamples": 100},
        cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
    text = json.dumps([c.get("outputs") for c in json.loads((tmp_path / "tables.out.ipynb").read_text())["cells"]])
    assert "FF \\u2191" in text or "FF ↑" in text
    assert "image/png" in text and "correct vs incorrect" in text and "accuracy" in text
    assert (tmp_path / "sup" / "figures" / "accuracy.png").exists()


def test_build_from_old_results_without_run_json(tmp_path):
    """Old logs (one domain, no recon SNR, no run.json) still build; accuracy then comes from the CSVs."""
    write_fake_results(tmp_path / "res")
    out = build_tables(tmp_path / "res", tmp_path / "sup", mask="bin", n_resamples=100)
    acc = out["accuracy"].loc[("m", "clean")]
    assert acc["accuracy"] == 0.75 and acc["clips"] == 4 and acc["source"] == "csv" and np.isnan(acc["recon_snr_db"])
    assert list(out["conditions"]) == ["spectrogram"]
    assert list(out["domains"][("m", "clean")].columns.get_level_values(0).unique()) == ["spectrogram"]
    assert {p.name for p in out["figures"]} == {"conditions_bin_m_spectrogram.png", "accuracy.png"}


# --------------------------------------------------------------------------- validated reading, counts, clip sets

def _row(s, dom="spectrogram", digest=None, **metrics):
    """One row of a new-schema results CSV (clip s of fold 5; every metric 1.0 unless given)."""
    row = {"sample": s, "filename": f"5-{s}-A-0.wav", "clip_digest": f"{s:016x}" if digest is None else digest,
           "label": 0, "pred": 0, "is_correct": 1, "domain": dom, "recon_snr_db": 20.0}
    return {**row, **{m: 1.0 for m in METRIC_NAMES}, **metrics}


def _run(root, method, rows_by_mask, model="m", cond="clean", info=None):
    """A run folder with run.json and one CSV per mask, written by the runner's writer."""
    from audiointerp.results_io import write_log

    run = root / model / f"{method}_{cond}"
    (run / "csvs").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps(info if info is not None else
                                             {"method": method, "condition": cond, "accuracy": {cond: 1.0},
                                              "n_clips_fold": 4, "key": {"fold": 5}}))
    for mask, rows in rows_by_mask.items():
        write_log(run / "csvs" / f"{mask}.csv", rows)
    return run


def test_duplicate_rows_are_dropped_not_double_counted(tmp_path):
    run = _run(tmp_path, "saliency", {"bin": [_row(s, AD=10.0 * (s + 1)) for s in range(2)]})
    with open(run / "csvs" / "bin.csv", "a") as f:  # a resumed run logged clip 0 again (other value)
        f.write(run.joinpath("csvs", "bin.csv").read_text().splitlines()[1].replace(",10,", ",99,") + "\n")
    with pytest.warns(UserWarning, match=r"bin\.csv: 0 torn last line, 1 duplicate row"):
        df = load_results(tmp_path)
    assert len(df) == 2 and list(df["AD"]) == [10.0, 20.0]  # the first copy kept
    t = mean_table(df, "method")
    assert t.loc["saliency", "clips"] == 2 and t.loc["saliency", "AD"] == 15.0


def test_torn_last_line_is_dropped(tmp_path):
    run = _run(tmp_path, "saliency", {"bin": [_row(0, AD=10.0), _row(1, AD=30.0)]})
    path = run / "csvs" / "bin.csv"
    path.write_text(path.read_text() + "2,5-2-A-0.wav,0000000000000002,0,0,1,spectrogram,20,1,1,64.")  # cut short
    with pytest.warns(UserWarning, match=r"bin\.csv: 1 torn last line, 0 duplicate"):
        df = load_results(tmp_path)
    assert sorted(df["sample"]) == [0, 1] and df["AD"].mean() == 20.0


def test_empty_and_header_only_csvs_give_no_rows_and_a_warning(tmp_path):
    from audiointerp.results_io import CSV_COLUMNS

    run = _run(tmp_path, "saliency", {"bin": [_row(0), _row(1)]})
    (run / "csvs" / "minmax.csv").write_text("")  # 0 bytes
    (run / "csvs" / "sigmoid.csv").write_text(",".join(CSV_COLUMNS) + "\n")  # header only
    with pytest.warns(UserWarning, match=r"2 results file\(s\).*hold no rows.*minmax\.csv.*sigmoid\.csv"):
        df = load_results(tmp_path)
    assert set(df["mask"]) == {"bin"} and len(df) == 2
    (run / "csvs" / "bin.csv").write_text("")
    with pytest.warns(UserWarning, match="hold no rows"), pytest.raises(ResultsError, match="no results found"):
        load_results(tmp_path)


def test_non_numeric_value_is_one_clear_error(tmp_path):
    run = _run(tmp_path, "saliency", {"bin": [_row(0), _row(1)]})
    path = run / "csvs" / "bin.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(",spectrogram,20.0,", ",spectrogram,oops,")  # recon_snr_db of clip 1
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsError, match=r"bin\.csv, line 3: recon_snr_db = 'oops' is not a number"):
        load_results(tmp_path)
    path.write_text("\n".join(lines[:2] + ["1,5-1-A-0.wav,0,0"]) + "\n")  # a malformed line
    with pytest.raises(ResultsError, match=r"bin\.csv, line 3: 4 fields"):
        build_tables(tmp_path, tmp_path / "sup", mask="bin", figures=False)


def test_damaged_run_json_is_one_clear_error(tmp_path):
    run = _run(tmp_path, "saliency", {"bin": [_row(0)]})
    (run / "run.json").write_text('{"method": "saliency", "accur')  # torn write
    for call in (load_results, accuracy_table):
        with pytest.raises(ResultsError, match=r"saliency_clean/run\.json is damaged"):
            call(tmp_path)


def test_legacy_csv_without_clip_digest_loads_beside_new_ones(tmp_path):
    write_grid(tmp_path)  # legacy header: no clip_digest
    _run(tmp_path, "shap", {"bin": [_row(s) for s in range(4)]})
    df = load_results(tmp_path)
    legacy, new = df[df["method"] != "shap"], df[df["method"] == "shap"]
    assert (legacy["clip_digest"] == "").all() and new["clip_digest"].str.len().eq(16).all()
    cells = cell_table(df[df["mask"] == "bin"], n_resamples=0)
    sets = cells.reset_index().groupby("method")["clip_set"].unique()
    assert len(sets["saliency"]) == 1 and list(sets["saliency"]) == list(sets["gradcam"])
    assert sets["shap"][0] != sets["saliency"][0]  # same names, but only the new logs carry digests


def test_counts_of_a_two_clip_run(tmp_path):
    for method in ("saliency", "gradcam"):
        _run(tmp_path, method, {mask: [_row(s, dom) for s in range(2) for dom in ("spectrogram", "audio")]
                                for mask in ("minmax", "bin", "topK_30_pos")})
    out = build_tables(tmp_path, tmp_path / "sup", n_resamples=50, figures=False)
    s = out["summary"]
    assert list(s.columns[-3:]) == ["clips", "masks", "clip_set"] and "n" not in s
    assert set(s["clips"]) == {2} and set(s["masks"]) == {3}  # not 2 x 3 x ... rows
    assert set(out["cells"]["clips"]) == {2} and "masks" not in out["cells"]
    assert out["cells"]["clip_set"].nunique() == 1
    assert set(out["accuracy"]["recon_snr_db clips"]) == {2} and set(out["accuracy"]["clips"]) == {4}
    md = (tmp_path / "sup" / "summary.md").read_text()
    assert "| clips | masks |" in md and "clip_set" not in md and "| 2 | 3 |" in md
    assert "clip_set" in pd.read_csv(tmp_path / "sup" / "summary.csv").columns
    t = mean_table(out["data"], "method")  # rows over masks and domains say so
    assert list(t.columns[-4:]) == ["clips", "domains", "masks", "clip_set"]
    assert t.loc["gradcam", ["clips", "domains", "masks"]].tolist() == [2, 2, 3]


def test_no_best_value_across_different_clip_sets(tmp_path):
    _run(tmp_path, "saliency", {"bin": [_row(s, FF=0.1) for s in range(2)]})  # 2 clips
    _run(tmp_path, "gradcam", {"bin": [_row(s, FF=0.3) for s in range(4)]})  # 4 clips
    _run(tmp_path, "shap", {"bin": [_row(s, FF=0.2) for s in range(4)]}, cond="white")  # alone in its group
    out = build_tables(tmp_path, tmp_path / "sup", mask="bin", n_resamples=50, figures=False)
    s = out["summary"]
    assert s.loc[("m", "clean", "spectrogram", "saliency"), "clips"] == 2
    md = to_markdown(s, best_within=["model", "condition", "domain"])
    clean = [line for line in md.splitlines() if "| clean |" in line]
    assert clean and not any("**" in line for line in clean) and all(" † |" in line for line in clean)
    white = next(line for line in md.splitlines() if "| white |" in line)
    assert "**0.200**" in white and "†" not in white
    assert "† clip sets differ within model m, condition clean, domain spectrogram: no best value marked" in md
    assert best_rows(s, ["model", "condition", "domain"])["FF"] == [("m", "white", "spectrogram", "shap")]
    assert "FF" not in best_rows(s)  # the whole column: clip sets differ
    tex = to_latex(s, best_within=["model", "condition", "domain"])
    assert r"saliency $^\dagger$" in tex and r"clip sets differ within model m, condition clean" in tex
    assert tex.count(r"\textbf") == 7  # the white row only: one bold per metric
    for name in ("summary.md", "conditions_bin_spectrogram.md", "tables.md"):
        assert "clip sets differ within" in (tmp_path / "sup" / name).read_text(), name
    assert r"$^\dagger$" in (tmp_path / "sup" / "summary.tex").read_text()


def test_tied_best_values_are_all_bold(tmp_path):
    _run(tmp_path, "saliency", {"bin": [_row(s, FF=0.5001, AD=10.0) for s in range(2)]})
    _run(tmp_path, "gradcam", {"bin": [_row(s, FF=0.4996, AD=10.0) for s in range(2)]})  # FF shows as 0.500 too
    _run(tmp_path, "shap", {"bin": [_row(s, FF=0.2, AD=10.04) for s in range(2)]})  # AD shows as 10.0 too
    t = mean_table(load_results(tmp_path), ["condition", "method"], n_resamples=0).droplevel("condition")
    md = to_markdown(t)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in md.splitlines()[2:]}
    assert rows["saliency"][1] == rows["gradcam"][1] == "**0.500**" and rows["shap"][1] == "0.200"
    # every row shows AD 10.0: no row is better, none is bold
    assert rows["saliency"][3] == rows["gradcam"][3] == rows["shap"][3] == "10.0"
    assert best_rows(t)["FF"] == "saliency"  # the first of the tied rows
    t2 = mean_table(load_results(tmp_path), ["condition", "method"], n_resamples=0)
    assert best_rows(t2, within="condition")["FF"] == [("clean", "saliency"), ("clean", "gradcam")]
    assert to_latex(t).count(r"\textbf{0.500}") == 2


def test_build_refuses_to_overwrite_an_earlier_build(tmp_path):
    write_grid(tmp_path / "res")
    build_tables(tmp_path / "res", tmp_path / "sup", mask="bin", n_resamples=20, figures=False)
    (tmp_path / "sup" / "notes.md").write_text("mine")
    before = (tmp_path / "sup" / "summary.md").stat().st_mtime_ns
    with pytest.raises(ResultsError, match=r"already holds tables from an earlier build \(tables\.md.*overwrite=True"):
        build_tables(tmp_path / "res", tmp_path / "sup", mask="bin", n_resamples=20, figures=False)
    assert (tmp_path / "sup" / "summary.md").stat().st_mtime_ns == before  # nothing written
    build_tables(tmp_path / "res", tmp_path / "sup", mask="bin", n_resamples=20, figures=False, overwrite=True)
    assert (tmp_path / "sup" / "notes.md").read_text() == "mine"


def test_lower_layers_do_not_import_tables():
    import subprocess
    import sys

    code = ("import sys, audiointerp.stats, audiointerp.render, audiointerp.figures; "
            "assert 'audiointerp.tables' not in sys.modules, 'tables imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    import audiointerp.tables as tables
    from audiointerp import figures, render, stats

    assert tables.bootstrap_ci is stats.bootstrap_ci and tables.to_markdown is render.to_markdown
    assert tables.plot_domains is figures.plot_domains
    for name in ("bootstrap_ci", "to_markdown", "to_latex", "with_arrows", "best_rows", "CI_LO", "CI_HI",
                 "METHOD_ORDER", "load_results", "run_table", "mean_table", "cell_table", "summary_table"):
        assert name in tables.__all__ and hasattr(tables, name)


def test_skipped_clips_give_their_run_its_own_clip_set(tmp_path):
    rows = {"bin": [_row(s) for s in range(2)]}
    _run(tmp_path, "saliency", rows)
    _run(tmp_path, "saliency", rows, cond="white", info={"method": "saliency", "condition": "white",
                                                          "accuracy": {"white": 0.5}, "n_clips_fold": 4,
                                                          "key": {"fold": 5}, "skipped_clips": ["5-9-A-0.wav"]})
    runs = run_table(tmp_path).set_index("condition")
    assert runs.loc["white", "skipped_clips"] == 1 and runs.loc["clean", "skipped_clips"] == 0
    acc = accuracy_table(tmp_path, n_resamples=20)
    assert acc.loc[("m", "clean"), "clip_set"] != acc.loc[("m", "white"), "clip_set"]
    assert acc["recon_snr_db clip_set"].nunique() == 1  # the logged clips are the same
    md = to_markdown(acc, best_within="model")
    assert "**1.000**" not in md  # accuracies not compared; the SNRs are (and tie: none bold)
    assert "(recon_snr_db)" not in md
    assert "clip sets differ within model m (accuracy): no best value marked" in md


def test_runs_of_the_old_topk_pos_rule_are_named(tmp_path):
    rows = {"topK_30_pos": [_row(s) for s in range(2)]}
    old = {"method": "saliency", "condition": "clean", "accuracy": {"clean": 1.0}, "n_clips_fold": 2,
           "key": {"fold": 5, "masks": ["topK_30_pos"]}}
    _run(tmp_path / "res", "saliency", rows, info=old)
    _run(tmp_path / "res", "gradcam", rows, info={**old, "method": "gradcam",
                                                  "key": {**old["key"], "mask_rules": 2}})
    runs = run_table(tmp_path / "res").set_index("method")
    assert runs.loc["saliency", "mask_rules"] == 1 and runs.loc["gradcam", "mask_rules"] == 2
    build_tables(tmp_path / "res", tmp_path / "sup", mask="topK_30_pos", n_resamples=10, figures=False)
    index = (tmp_path / "sup" / "tables.md").read_text()
    assert "Mask rule: the `topK_<k>_pos` masks of 1 run folders (m · clean)" in index


def test_method_variants_sort_after_their_method_and_keep_their_rows(tmp_path):
    rows = {"bin": [_row(s) for s in range(2)]}
    for method in ("lime", "saliency"):
        _run(tmp_path, method, rows)
    info = {"method": "lime", "method_label": "lime (n1000)", "condition": "clean", "accuracy": {"clean": 1.0},
            "n_clips_fold": 4, "key": {"fold": 5}}
    run = tmp_path / "m" / "lime-n1000_clean"
    (run / "csvs").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps(info))
    from audiointerp.results_io import write_log

    write_log(run / "csvs" / "bin.csv", rows["bin"])
    from audiointerp.tables import summary_table

    t = summary_table(load_results(tmp_path), n_resamples=0)
    assert list(t.index.get_level_values("method")) == ["saliency", "lime", "lime (n1000)"]


def test_committed_supplementary_is_what_the_committed_results_give(tmp_path):
    """`make tables` on the committed results/ reproduces every committed table byte for byte."""
    results, committed = REPO / "results", REPO / "supplementary"
    if not any(results.glob("*/*/csvs/*.csv")) or not (committed / "tables.md").is_file():
        pytest.skip("no committed results/ and supplementary/ in this checkout")
    build_tables(results, tmp_path / "sup", figures=False)
    built = {p.relative_to(tmp_path / "sup") for p in (tmp_path / "sup").rglob("*") if p.suffix in (".csv", ".md", ".tex")}
    assert built, "nothing was built"
    missing = [str(rel) for rel in sorted(built) if not (committed / rel).is_file()]
    assert not missing, f"tables not committed (make tables): {missing[:5]}"
    # tables.md differs only by its figure links (figures=False here)
    differ = [str(rel) for rel in sorted(built)
              if rel.name != "tables.md" and (committed / rel).read_bytes() != (tmp_path / "sup" / rel).read_bytes()]
    assert not differ, f"rebuild the tables (make tables): {len(differ)} committed tables differ, e.g. {differ[:5]}"
