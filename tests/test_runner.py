"""The runner: logs, batching, resume guarantee, provenance and clear errors; the CLI."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from audiointerp.errors import ConfigError, ResultsError
from audiointerp.masks import MASK_NAMES
from audiointerp.runner import CSV_COLUMNS, RunConfig, completed_samples, run


def _cfg(ckpt, results, **kw):
    base = dict(checkpoint=str(ckpt), methods=["saliency", "gradcam"], results=str(results), chunk=2)
    base.update(kw)
    return RunConfig(**base)


def _read_all(folder):
    return {m: pd.read_csv(folder / "csvs" / f"{m}.csv") for m in MASK_NAMES}


def test_run_writes_logs(esc50_env, toy_checkpoint, tmp_path):
    out = run(_cfg(toy_checkpoint, tmp_path / "res"), progress=False)
    for method in ("saliency", "gradcam"):
        folder = tmp_path / "res" / "toy_mel" / f"{method}_clean"
        assert out[method]["n_clips_done"] == 6
        tables = _read_all(folder)
        for name, df in tables.items():
            assert list(df.columns) == CSV_COLUMNS, name
            pairs = list(zip(df["sample"], df["domain"]))  # one row per clip and domain, no duplicates
            assert sorted(pairs) == sorted((s, d) for s in range(6) for d in ("spectrogram", "audio"))
            assert (df["recon_snr_db"] > 100).all()  # the gain re-synthesis returns the clip itself
            assert df["FidIn"].isin([0, 1]).all() and df["AI"].isin([0, 100]).all()
            assert (df["is_correct"] == (df["label"] == df["pred"])).all()
        assert len(list((folder / "attributions").glob("*.npy"))) == 6
        info = json.loads((folder / "run.json").read_text())
        assert info["status"] == "complete" and info["seed"] == 0
        assert {"torch", "captum", "shap"} <= set(info["versions"])
        assert info["git_commit"] and info["features"]["kind"] == "mel"
        assert info["timings"]["clips_computed"] == 6 and set(info["accuracy"]) == {"clean"}
        assert info["method"] == method and info["condition"] == "clean" and info["noise"] is None


def test_all_ones_like_masks_score_as_expected(esc50_env, toy_checkpoint, tmp_path):
    """A 100 % top-K keeps everything: x_in == x, so AD = AG = AI = 0 and FidIn = 1, and the
    audio-domain scores (re-synthesised and re-analysed) equal the spectrogram-domain ones."""
    run(_cfg(toy_checkpoint, tmp_path / "res", methods=["saliency"], k=(1.0,), tau=(0.5,),
             masks=["topK_100"]), progress=False)
    df = pd.read_csv(tmp_path / "res" / "toy_mel" / "saliency_clean" / "csvs" / "topK_100.csv")
    assert (df["AD"].abs() < 1e-3).all() and (df["AI"] == 0).all() and (df["FidIn"] == 1).all()
    assert (df["SPS"].abs() < 1e-9).all()
    spec, audio = (df[df["domain"] == d].set_index("sample") for d in ("spectrogram", "audio"))
    for m in ("FF", "AD", "AG", "FidIn", "SPS", "COMP"):
        assert np.allclose(spec[m], audio[m], atol=1e-3), m
    assert (audio["AI"] == 0).all()


def test_resume_after_a_kill_loses_and_duplicates_nothing(esc50_env, toy_checkpoint, tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    run(_cfg(toy_checkpoint, ref, methods=["saliency"]), progress=False)
    expected = _read_all(ref / "toy_mel" / "saliency_clean")

    # Kill the run while it appends the second chunk's rows: after 3 of the 14 mask files.
    import audiointerp.runner as runner

    real_append = runner._append_rows
    calls = {"n": 0}

    def dying_append(path, rows):
        calls["n"] += 1
        if calls["n"] == len(MASK_NAMES) + 4:
            with open(path, "a") as f:  # a torn, half-written line
                f.write("2,1-100")
            raise KeyboardInterrupt("killed")
        real_append(path, rows)

    monkeypatch.setattr(runner, "_append_rows", dying_append)
    res = tmp_path / "res"
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(toy_checkpoint, res, methods=["saliency"]), progress=False)
    folder = res / "toy_mel" / "saliency_clean"
    texts = {m: (folder / "csvs" / f"{m}.csv").read_text() for m in MASK_NAMES}
    complete = {m: t.count("\n") - 1 for m, t in texts.items()}
    assert set(complete.values()) == {4, 8}  # torn state (2 rows per clip: both domains): some files ahead of others
    assert sum(not t.endswith("\n") for t in texts.values()) == 1  # and one half-written line
    assert json.loads((folder / "run.json").read_text())["status"] == "running"

    monkeypatch.setattr(runner, "_append_rows", real_append)
    out = run(_cfg(toy_checkpoint, res, methods=["saliency"]), progress=False)
    assert out["saliency"]["clips_computed"] == 4  # clips 2..5: the torn clips were redone once
    got = _read_all(folder)
    for m in MASK_NAMES:
        assert sorted(got[m]["sample"].tolist()) == [s for s in range(6) for _ in range(2)], m
        pd.testing.assert_frame_equal(got[m], expected[m], check_exact=False, atol=1e-5)
    # a completed run resumes to nothing
    again = run(_cfg(toy_checkpoint, res, methods=["saliency"]), progress=False)
    assert again["saliency"]["clips_computed"] == 0


def test_limit_then_extend(esc50_env, toy_checkpoint, tmp_path):
    run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"], limit=3), progress=False)
    out = run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"]), progress=False)
    assert out["gradcam"]["clips_computed"] == 3 and out["gradcam"]["n_clips_done"] == 6


def test_completed_samples_repairs_duplicates(tmp_path):
    d = tmp_path / "csvs"
    d.mkdir()
    row = "0,a.wav,0,0,1,spectrogram,138,0.1,0,1,0,1,0.5,3\n"
    audio = row.replace("spectrogram", "audio")
    for m in ("minmax", "bin"):
        (d / f"{m}.csv").write_text(",".join(CSV_COLUMNS) + "\n" + row + audio + row.replace("0,a", "1,b", 1))
    (d / "bin.csv").write_text((d / "bin.csv").read_text() + row)  # duplicate of clip 0
    assert completed_samples(d, ["minmax", "bin"]) == {0, 1}  # spectrogram domain only
    assert pd.read_csv(d / "bin.csv")["sample"].tolist() == [0, 1]  # the audio row is not asked for
    (d / "minmax.csv").write_text(",".join(CSV_COLUMNS) + "\n" + row + audio + row.replace("0,a", "1,b", 1))
    (d / "bin.csv").write_text(",".join(CSV_COLUMNS) + "\n" + row + audio + row.replace("0,a", "1,b", 1))
    assert completed_samples(d, ["minmax", "bin"], ("spectrogram", "audio")) == {0}  # clip 1 lacks audio
    assert pd.read_csv(d / "bin.csv")["sample"].tolist() == [0, 0]


def test_other_configuration_never_overwrites(esc50_env, toy_checkpoint, tmp_path):
    run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=2), progress=False)
    folder = tmp_path / "toy_mel" / "saliency_clean"
    before = {p.name: p.read_bytes() for p in (folder / "csvs").iterdir()}
    with pytest.raises(ResultsError, match="another configuration"):
        run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], tau=(0.2, 0.5, 0.8)), progress=False)
    assert {p.name: p.read_bytes() for p in (folder / "csvs").iterdir()} == before


@pytest.mark.parametrize("kw, word", [({"methods": ["saliency", "lime"]}, "lime"),
                                      ({"condition": "underwater"}, "underwater"),
                                      ({"masks": ["topK_7"]}, "topK_7"), ({"fold": 6}, "fold"),
                                      ({"condition": "white_gen", "snr_db": "high"}, "high"),
                                      ({"domains": "audio,video"}, "video"), ({"inversion": "magic"}, "magic"),
                                      ({"k": (0.05, 30)}, "30"), ({"tau": (0.0,)}, "tau")])
def test_bad_names_are_clear_errors(toy_checkpoint, tmp_path, kw, word):
    with pytest.raises(ConfigError, match=word) as err:
        run(_cfg(toy_checkpoint, tmp_path, **kw), progress=False)
    if word in ("lime", "underwater", "topK_7", "video", "magic"):
        assert "valid" in str(err.value)


def test_noise_condition_run_and_audio_examples(esc50_env, toy_checkpoint, tmp_path):
    out = run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"], condition="white_gen", snr_db=0.0, limit=2,
                   audio_examples=1, masks=["topK_30", "bin"]), progress=False)
    folder = tmp_path / "toy_mel" / "gradcam_white_gen_snr0dB"
    assert out["gradcam"]["folder"] == str(folder) and out["_condition"] == "white_gen_snr0dB"
    info = json.loads((folder / "run.json").read_text())
    assert info["condition"] == "white_gen_snr0dB" and set(info["accuracy"]) == {"white_gen_snr0dB"}
    assert info["noise"]["snr_db_used"] == pytest.approx(0.0) and len(info["noise"]["sha256"]) == 64
    df = pd.read_csv(folder / "csvs" / "topK_30.csv")
    assert len(df) == 4 and set(df["domain"]) == {"spectrogram", "audio"}
    import soundfile as sf

    wavs = sorted((folder / "audio").rglob("*.wav"))
    assert len(wavs) == 5  # the (noisy) clip, and x_in / x_out of two masks, of the first clip only
    assert {sf.info(str(p)).samplerate for p in wavs} == {16000}  # the model rate, not the files' 22050 Hz
    assert all(sf.info(str(p)).frames == 16000 for p in wavs)
    # the same folder with another SNR is another run, never mixed in
    with pytest.raises(ResultsError):
        run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"], condition="white_gen", snr_db=0.0, limit=2,
                 audio_examples=1, masks=["topK_30", "bin"], inversion="pinv"), progress=False)


def test_shap_in_the_runner(esc50_env, toy_checkpoint, tmp_path):
    out = run(_cfg(toy_checkpoint, tmp_path, methods=["shap"], limit=2, shap_nsamples=4), progress=False)
    assert out["shap"]["n_clips_done"] == 2
    again = run(_cfg(toy_checkpoint, tmp_path, methods=["shap"], limit=2, shap_nsamples=4), progress=False)
    assert again["shap"]["clips_computed"] == 0
    a = torch.from_numpy(np.load(next((tmp_path / "toy_mel" / "shap_clean" / "attributions").glob("*.npy"))))
    assert a.shape == (1, 64, 101) and a.abs().sum() > 0


def _cli(*args, env=None):
    import os

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "audiointerp", *args], capture_output=True, text=True, env=e)


def test_cli_errors_are_one_line(toy_checkpoint, tmp_path, synthetic_root):
    r = _cli("run", "--checkpoint", str(toy_checkpoint), "--methods", "lime", "--results", str(tmp_path),
             env={"ESC50_ROOT": str(synthetic_root)})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "unknown method 'lime'" in r.stderr and "saliency" in r.stderr
    r = _cli("run", "--checkpoint", str(toy_checkpoint), "--condition", str(tmp_path / "no-such-noise.wav"),
             "--results", str(tmp_path), env={"ESC50_ROOT": str(synthetic_root)})
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no-such-noise.wav" in r.stderr
    r = _cli("run", "--checkpoint", str(toy_checkpoint), "--condition", "pink", "--snr-db", "inf",
             "--results", str(tmp_path), env={"ESC50_ROOT": str(synthetic_root)})
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "snr_db" in r.stderr and "inf" in r.stderr
    r = _cli("evaluate", "--checkpoint", str(tmp_path / "missing.pt"))
    assert r.returncode == 2 and "checkpoint not found" in r.stderr and "missing.pt" in r.stderr
    r = _cli("evaluate", "--checkpoint", str(toy_checkpoint), env={"ESC50_ROOT": str(tmp_path / "nowhere")})
    assert r.returncode == 2 and "nowhere" in r.stderr and "meta/esc50.csv" in r.stderr
    env = {"ESC50_ROOT": ""}
    r = _cli("evaluate", "--checkpoint", str(toy_checkpoint), env=env)
    assert r.returncode == 2 and "ESC50_ROOT is not set" in r.stderr


def test_cli_evaluate_prints_accuracy_last(toy_checkpoint, synthetic_root):
    r = _cli("evaluate", "--checkpoint", str(toy_checkpoint), "--fold", "5", env={"ESC50_ROOT": str(synthetic_root)})
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"fold 5 accuracy: ([\d.]+) \[([\d.]+), ([\d.]+)\]", last)
    assert m, last
    acc, lo, hi = map(float, m.groups())
    assert 0 <= lo <= acc <= hi <= 1


def test_cli_run_and_tables(toy_checkpoint, synthetic_root, tmp_path):
    env = {"ESC50_ROOT": str(synthetic_root)}
    r = _cli("run", "--checkpoint", str(toy_checkpoint), "--methods", "saliency,gradcam", "--limit", "2",
             "--results", str(tmp_path / "res"), env=env)
    assert r.returncode == 0, r.stderr
    r = _cli("tables", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "sup"))
    assert r.returncode == 0, r.stderr
    assert "FF ↑" in r.stdout and "AD ↓" in r.stdout and "gradcam" in r.stdout
    assert (tmp_path / "sup" / "summary.csv").is_file()
