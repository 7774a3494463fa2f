"""The runner: logs, batching, resume guarantees, identity, one writer, provenance and clear errors; the CLI."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from audiointerp.errors import AudioFileError, ConfigError, DatasetError, ResultsError
from audiointerp.masks import MASK_NAMES
from audiointerp.results_io import CSV_COLUMNS
from audiointerp.runner import RunConfig, run


def _cfg(ckpt, results, **kw):
    base = dict(checkpoint=str(ckpt), methods=["saliency", "gradcam"], results=str(results), chunk=2)
    base.update(kw)
    return RunConfig(**base)


def _read_all(folder, masks=MASK_NAMES):
    return {m: pd.read_csv(folder / "csvs" / f"{m}.csv") for m in masks}


def _bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def own_root(tmp_path, synthetic_root, monkeypatch):
    """A private, writable copy of the synthetic dataset, as ESC50_ROOT."""
    root = tmp_path / "esc50"
    shutil.copytree(synthetic_root, root)
    monkeypatch.setenv("ESC50_ROOT", str(root))
    return root


def test_run_writes_logs(esc50_env, toy_checkpoint, tmp_path):
    out = run(_cfg(toy_checkpoint, tmp_path / "res"), progress=False)
    from audiointerp.data import ESC50

    ds = ESC50(esc50_env, (5,), 16000, 1.0)
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
            # each row names its clip and the clip file's digest
            spec = df[df["domain"] == "spectrogram"]
            assert spec["filename"].tolist() == ds.filenames
            assert spec["clip_digest"].tolist() == [ds.clip_digest(i) for i in range(6)]
        assert len(list((folder / "attributions").glob("*.npy"))) == 6
        info = json.loads((folder / "run.json").read_text())
        assert info["status"] == "complete" and info["seed"] == 0 and info["device"]["type"] in ("cpu", "cuda")
        assert {"torch", "captum", "shap"} <= set(info["versions"])
        assert info["git_commit"] and info["features"]["kind"] == "mel"
        assert info["timings"]["clips_computed"] == 6 and set(info["accuracy"]) == {"clean"}
        assert info["method"] == method and info["condition"] == "clean" and info["noise"] is None
        assert info["dataset"] == ds.identity() and info["skipped_clips"] == []


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

    real_append = runner.append_log
    calls = {"n": 0}

    def dying_append(path, rows):
        calls["n"] += 1
        if calls["n"] == len(MASK_NAMES) + 4:
            with open(path, "a") as f:  # a torn, half-written line
                f.write("2,1-100")
            raise KeyboardInterrupt("killed")
        real_append(path, rows)

    monkeypatch.setattr(runner, "append_log", dying_append)
    res = tmp_path / "res"
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(toy_checkpoint, res, methods=["saliency"]), progress=False)
    folder = res / "toy_mel" / "saliency_clean"
    texts = {m: (folder / "csvs" / f"{m}.csv").read_text() for m in MASK_NAMES}
    complete = {m: t.count("\n") - 1 for m, t in texts.items()}
    assert set(complete.values()) == {4, 8}  # torn state (2 rows per clip: both domains): some files ahead of others
    assert sum(not t.endswith("\n") for t in texts.values()) == 1  # and one half-written line
    assert json.loads((folder / "run.json").read_text())["status"] == "running"

    monkeypatch.setattr(runner, "append_log", real_append)
    out = run(_cfg(toy_checkpoint, res, methods=["saliency"]), progress=False)
    assert out["saliency"]["clips_computed"] == 4  # clips 2..5 (2, 3 only for the masks that lacked them)
    got = _read_all(folder)
    for m in MASK_NAMES:
        assert sorted(got[m]["sample"].tolist()) == [s for s in range(6) for _ in range(2)], m
        pd.testing.assert_frame_equal(got[m], expected[m], check_exact=False, atol=1e-5)
    # a completed run resumes to nothing
    again = run(_cfg(toy_checkpoint, res, methods=["saliency"]), progress=False)
    assert again["saliency"]["clips_computed"] == 0


def test_deleted_mask_csv_recomputes_only_that_mask(esc50_env, toy_checkpoint, tmp_path, monkeypatch):
    """Resume never destroys finished work: with one mask's CSV deleted, the other 13 CSVs stay on
    disk, byte for byte, throughout — even when the resume itself is interrupted."""
    import audiointerp.runner as runner

    run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=4), progress=False)
    folder = tmp_path / "toy_mel" / "saliency_clean"
    original = (folder / "csvs" / "bin.csv").read_bytes()
    (folder / "csvs" / "bin.csv").unlink()
    others = {m: (folder / "csvs" / f"{m}.csv").read_bytes() for m in MASK_NAMES if m != "bin"}

    real_append = runner.append_log
    appended = []

    def dying_append(path, rows):  # the resume is killed after its first chunk
        appended.append(path.name)
        real_append(path, rows)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(runner, "append_log", dying_append)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=4), progress=False)
    assert appended == ["bin.csv"]  # only the missing mask is written
    assert {m: (folder / "csvs" / f"{m}.csv").read_bytes() for m in others} == others

    monkeypatch.setattr(runner, "append_log", real_append)
    out = run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=4), progress=False)
    assert out["saliency"]["clips_computed"] == 2  # clips 2, 3 of bin; 0, 1 were logged before the kill
    assert {m: (folder / "csvs" / f"{m}.csv").read_bytes() for m in others} == others
    a = pd.read_csv(folder / "csvs" / "bin.csv")
    b = pd.read_csv(pd.io.common.BytesIO(original))
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-5)


def test_limit_then_extend(esc50_env, toy_checkpoint, tmp_path):
    run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"], limit=3), progress=False)
    out = run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"]), progress=False)
    assert out["gradcam"]["clips_computed"] == 3 and out["gradcam"]["n_clips_done"] == 6


def test_partial_domains_and_duplicates_are_repaired(esc50_env, toy_checkpoint, tmp_path):
    run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"], limit=2), progress=False)
    path = tmp_path / "toy_mel" / "gradcam_clean" / "csvs" / "minmax.csv"
    lines = path.read_text().splitlines(keepends=True)
    # clip 1 keeps only its spectrogram row; clip 0's first row is duplicated
    path.write_text("".join([lines[0], lines[1], lines[2], lines[1], lines[3]]))
    out = run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"], limit=2), progress=False)
    assert out["gradcam"]["clips_computed"] == 1
    df = pd.read_csv(path)
    assert sorted(zip(df["sample"], df["domain"])) == sorted((s, d) for s in (0, 1) for d in ("spectrogram", "audio"))


def test_finished_run_is_read_only(esc50_env, toy_checkpoint, tmp_path, monkeypatch):
    """A finished run is recognised without writing: no lock, no run.json rewrite (provenance kept)."""
    import audiointerp.runner as runner

    run(_cfg(toy_checkpoint, tmp_path, methods=["saliency", "gradcam"], limit=2), progress=False)
    before = _bytes(tmp_path)

    def refuse(*a, **k):
        raise AssertionError("a finished run must not be written")

    for name in ("run_lock", "write_json", "append_log", "write_log", "make_folder"):
        monkeypatch.setattr(runner, name, refuse)
    out = run(_cfg(toy_checkpoint, tmp_path, methods=["saliency", "gradcam"], limit=2), progress=False)
    assert out["saliency"]["clips_computed"] == 0 and out["gradcam"]["finished"]
    assert out["_accuracy"] == json.loads((tmp_path / "toy_mel" / "saliency_clean" / "run.json").read_text()
                                          )["accuracy"]["clean"]
    assert _bytes(tmp_path) == before


def test_other_configuration_never_overwrites(esc50_env, toy_checkpoint, tmp_path):
    run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=2), progress=False)
    folder = tmp_path / "toy_mel" / "saliency_clean"
    before = _bytes(folder)
    with pytest.raises(ResultsError, match="another configuration"):
        run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], tau=(0.2, 0.5, 0.8)), progress=False)
    assert _bytes(folder) == before


def test_other_dataset_is_refused(own_root, toy_checkpoint, tmp_path, monkeypatch, synthetic_root):
    """A run folder written from other data is refused: another root with other clips, or one
    clip replaced (today: the second root's clips were appended and the run marked complete)."""
    res = tmp_path / "res"
    run(_cfg(toy_checkpoint, res, methods=["saliency"], limit=2), progress=False)
    folder = res / "toy_mel" / "saliency_clean"
    before = _bytes(folder)
    other = tmp_path / "other"
    from conftest import make_synthetic_esc50

    make_synthetic_esc50(other, per_fold=3)  # another dataset: 3 clips per class and fold
    monkeypatch.setenv("ESC50_ROOT", str(other))
    with pytest.raises(ResultsError, match="another dataset"):
        run(_cfg(toy_checkpoint, res, methods=["saliency"]), progress=False)
    assert _bytes(folder) == before
    # the same data in another folder is the same dataset
    monkeypatch.setenv("ESC50_ROOT", str(synthetic_root))
    out = run(_cfg(toy_checkpoint, res, methods=["saliency"], limit=2), progress=False)
    assert out["saliency"]["clips_computed"] == 0
    # one clip replaced by silence-free noise: another dataset
    monkeypatch.setenv("ESC50_ROOT", str(own_root))
    clip = sorted((own_root / "audio").glob("5-*.flac"))[-1]
    sf.write(clip, (0.1 * np.random.default_rng(1).standard_normal(22050)).astype(np.float32), 22050)
    with pytest.raises(ResultsError, match="clip files differ"):
        run(_cfg(toy_checkpoint, res, methods=["saliency"], limit=2), progress=False)
    assert _bytes(folder) == before


def test_changed_clip_is_recomputed_not_served_from_cache(own_root):
    """Replace a clip after its fold's features were cached: the features come from the new file."""
    from audiointerp.data import ESC50, fold_features
    from audiointerp.processing import FeatureConfig

    cfg = FeatureConfig(kind="mel", duration=1.0)
    before = fold_features(ESC50(own_root, (5,), 16000, 1.0), cfg)  # cached
    target = own_root / "audio" / "5-100520-A-2.flac"  # a siren clip of fold 5
    data, sr = sf.read(target)
    sf.write(target, 0.3 * np.sin(np.arange(len(data)) * 0.05), sr)
    ds = ESC50(own_root, (5,), 16000, 1.0)
    after = fold_features(ds, cfg)
    assert torch.equal(after, fold_features(ds, cfg, cache=False))
    i = ds.filenames.index("5-100520-A-2.wav")
    assert not torch.equal(after[i], before[i])
    assert torch.equal(after[:i], before[:i]) and torch.equal(after[i + 1:], before[i + 1:])


def test_bad_clip_is_refused_by_name_or_skipped(own_root, toy_checkpoint, tmp_path):
    bad = own_root / "audio" / "5-100510-A-1.flac"
    bad.unlink()
    sf.write(bad.with_suffix(".wav"), np.full(22050, np.nan, dtype=np.float32), 22050, subtype="FLOAT")
    with pytest.raises(AudioFileError, match="5-100510-A-1.wav") as err:
        run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"]), progress=False)
    assert "NaN" in str(err.value)
    assert not (tmp_path / "toy_mel").exists()  # nothing written
    with pytest.warns(UserWarning, match="skipped 1 bad clip"):
        out = run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], on_bad_clip="skip"), progress=False)
    folder = tmp_path / "toy_mel" / "saliency_clean"
    info = json.loads((folder / "run.json").read_text())
    assert [s["filename"] for s in info["skipped_clips"]] == ["5-100510-A-1.wav"]
    assert out["saliency"]["n_clips_done"] == 5 and info["n_clips_fold"] == 5
    df = pd.read_csv(folder / "csvs" / "bin.csv")
    assert "5-100510-A-1.wav" not in set(df["filename"]) and len(df) == 10
    assert info["status"] == "complete"


def test_concurrent_run_into_one_folder_is_refused(esc50_env, toy_checkpoint, tmp_path):
    folder = tmp_path / "toy_mel" / "saliency_clean"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom audiointerp.results_io import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n", str(folder)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ResultsError, match=rf"being written by process {holder.pid}"):
            run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=2), progress=False)
        assert not (folder / "csvs").exists() and not (folder / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the killed holder's lock: the run goes ahead
    out = run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=2), progress=False)
    assert out["saliency"]["n_clips_done"] == 2


def test_full_disk_is_one_error_and_keeps_what_was_written(esc50_env, toy_checkpoint, tmp_path, monkeypatch):
    import audiointerp.results_io as rio

    run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"], limit=2), progress=False)
    folder = tmp_path / "toy_mel" / "gradcam_clean"
    before = {m: (folder / "csvs" / f"{m}.csv").read_bytes() for m in MASK_NAMES}

    real_fsync = os.fsync

    def full(fd):  # the disk fills up while the logs are appended
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".csv"):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    with monkeypatch.context() as mp:
        mp.setattr(rio.os, "fsync", full)
        with pytest.raises(ResultsError, match="No space left on device") as err:
            run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"], limit=4), progress=False)
    assert str(folder) in str(err.value)
    for m in MASK_NAMES:
        assert (folder / "csvs" / f"{m}.csv").read_bytes().startswith(before[m])
    out = run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"], limit=4), progress=False)
    assert out["gradcam"]["n_clips_done"] == 4


def test_results_path_that_is_a_file_is_one_error(esc50_env, toy_checkpoint, tmp_path):
    (tmp_path / "res").write_text("not a folder")
    with pytest.raises(ResultsError, match="res"):
        run(_cfg(toy_checkpoint, tmp_path / "res", methods=["saliency"], limit=1), progress=False)


def test_torn_run_json_is_named(esc50_env, toy_checkpoint, tmp_path):
    run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=1), progress=False)
    rj = tmp_path / "toy_mel" / "saliency_clean" / "run.json"
    rj.write_text(rj.read_text()[:40])
    with pytest.raises(ResultsError, match="run.json is damaged"):
        run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=1), progress=False)


def test_logs_without_run_json_are_refused(esc50_env, toy_checkpoint, tmp_path):
    run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=1), progress=False)
    (tmp_path / "toy_mel" / "saliency_clean" / "run.json").unlink()
    with pytest.raises(ResultsError, match="no run.json"):
        run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=1), progress=False)


def test_shap_without_training_folds_is_one_error_and_writes_nothing(own_root, toy_checkpoint, tmp_path):
    csv = own_root / "meta" / "esc50.csv"
    meta = pd.read_csv(csv)
    meta[meta["fold"] >= 4].to_csv(csv, index=False)
    with pytest.raises(DatasetError, match="training folds") as err:
        run(_cfg(toy_checkpoint, tmp_path, methods=["saliency", "shap"], limit=1), progress=False)
    assert "have no clips" in str(err.value)
    assert not (tmp_path / "toy_mel").exists()


def test_classes_other_than_the_checkpoints_are_refused(own_root, toy_checkpoint, tmp_path):
    csv = own_root / "meta" / "esc50.csv"
    meta = pd.read_csv(csv)
    meta["category"] = meta["category"].replace({"rain": "thunder"})
    meta.to_csv(csv, index=False)
    with pytest.raises(ConfigError, match="thunder"):
        run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=1), progress=False)


def test_mask_names_never_collide(esc50_env, toy_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="share the mask name"):
        run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], k=(0.3, 0.3000001)), progress=False)
    run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], limit=1, k=(0.3, 0.301, 0.001), tau=(0.5,)),
        progress=False)
    names = sorted(p.stem for p in (tmp_path / "toy_mel" / "saliency_clean" / "csvs").glob("topK_*.csv"))
    assert names == ["topK_0.1", "topK_0.1_pos", "topK_30", "topK_30.1", "topK_30.1_pos", "topK_30_pos"]


@pytest.mark.parametrize("kw, word", [({"methods": ["saliency", "limes"]}, "limes"),
                                      ({"condition": "underwater"}, "underwater"),
                                      ({"masks": ["topK_7"]}, "topK_7"), ({"fold": 0}, "fold"),
                                      ({"condition": "white_gen", "snr_db": "high"}, "high"),
                                      ({"domains": "audio,video"}, "video"), ({"inversion": "magic"}, "magic"),
                                      ({"k": (0.05, 30)}, "30"), ({"tau": (0.0,)}, "tau"),
                                      ({"alpha": 0.6}, "alpha"), ({"snr_db": 3.0}, "snr_db"),
                                      ({"condition": "white_gen", "noise_offset": float("nan")}, "nan"),
                                      ({"interpreters": {"piq": "x.pt"}}, "piq"),
                                      ({"interpreters": {"saliency": "x.pt"}}, "saliency"),
                                      ({"limit": 0}, "limit"), ({"on_bad_clip": "ignore"}, "ignore")])
def test_bad_names_are_clear_errors(toy_checkpoint, tmp_path, kw, word):
    with pytest.raises(ConfigError, match=word) as err:
        run(_cfg(toy_checkpoint, tmp_path, **kw), progress=False)
    if word in ("limes", "underwater", "topK_7", "video", "magic"):
        assert "valid" in str(err.value)


@pytest.mark.parametrize("fold, word", [(6, "fold"), (7, "fold")])
def test_fold_outside_the_dataset_is_an_error(esc50_env, toy_checkpoint, tmp_path, fold, word):
    with pytest.raises(DatasetError, match=word):
        run(_cfg(toy_checkpoint, tmp_path, fold=fold), progress=False)


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
    a = torch.from_numpy(np.load(next((tmp_path / "toy_mel" / "shap-n4_clean" / "attributions").glob("*.npy"))))
    assert a.shape == (1, 64, 101) and a.abs().sum() > 0


def _cli(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "audiointerp", *args], capture_output=True, text=True, env=e)


def _one_line_error(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


def test_cli_errors_are_one_line(toy_checkpoint, tmp_path, synthetic_root):
    env = {"ESC50_ROOT": str(synthetic_root)}
    ck = ["--checkpoint", str(toy_checkpoint), "--results", str(tmp_path)]
    _one_line_error(_cli("run", *ck, "--methods", "limes", env=env), "unknown method 'limes'", "saliency")
    _one_line_error(_cli("run", *ck, "--condition", str(tmp_path / "no-such-noise.wav"), env=env),
                    "no-such-noise.wav")
    _one_line_error(_cli("run", *ck, "--condition", "pink", "--snr-db", "inf", env=env), "snr_db", "inf")
    _one_line_error(_cli("run", *ck, "--condition", "pink", "--noise-offset", "nan", env=env), "offset", "nan")
    _one_line_error(_cli("run", *ck, "--alpha", "0.5", env=env), "alpha", "clean")
    _one_line_error(_cli("run", *ck, "--k", "0.3,0.3000001", env=env), "share the mask name")
    _one_line_error(_cli("run", *ck, "--k", "0.3,x", env=env), "'x' is not a number")
    _one_line_error(_cli("run", *ck, "--interpreters", "l2i=a.pt", env=env), "l2i")
    _one_line_error(_cli("run", *ck, "--fold", "7", env=env), "7")
    (tmp_path / "file").write_text("x")
    _one_line_error(_cli("run", "--checkpoint", str(toy_checkpoint), "--results", str(tmp_path / "file"),
                         "--limit", "1", env=env), str(tmp_path / "file"))
    _one_line_error(_cli("evaluate", "--checkpoint", str(tmp_path / "missing.pt")), "checkpoint not found",
                    "missing.pt")
    _one_line_error(_cli("evaluate", "--checkpoint", str(toy_checkpoint), env={"ESC50_ROOT": str(tmp_path / "nowhere")}),
                    "nowhere", "meta/esc50.csv")
    _one_line_error(_cli("evaluate", "--checkpoint", str(toy_checkpoint), env={"ESC50_ROOT": ""}),
                    "ESC50_ROOT is not set")


def test_cli_errors_for_bad_metadata(toy_checkpoint, tmp_path, synthetic_root):
    root = tmp_path / "esc"
    shutil.copytree(synthetic_root, root)
    csv = root / "meta" / "esc50.csv"
    env = {"ESC50_ROOT": str(root)}
    text = csv.read_text()
    for content, word in [("", "esc50.csv"), (text.splitlines()[0] + "\n", "esc50.csv"),
                          (text.replace(",5,2,siren", ",five,2,siren", 1), "five"),
                          (text.replace(",5,2,siren", ",5,99,siren", 1), "99")]:
        csv.write_text(content)
        _one_line_error(_cli("run", "--checkpoint", str(toy_checkpoint), "--results", str(tmp_path / "r"),
                             "--limit", "1", env=env), word)


def test_cli_help_shows_defaults_choices_and_environment():
    r = _cli("run", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for needle in ("[default: 32]", "--shap-nsamples", "[default: 0.05,0.3,0.5]", "one of: saliency, gradcam",
                   "--on-bad-clip", "ESC50_ROOT", "AUDIOINTERP_NOISES", "AUDIOINTERP_CACHE", "[default: results]"):
        assert needle in text, needle


def test_cli_options_are_the_run_config_fields():
    """The command line is derived from RunConfig: every CLI field has an option, with its default."""
    from dataclasses import fields

    from audiointerp.__main__ import build_parser
    from audiointerp.config import from_options

    args = build_parser().parse_args(["run", "--checkpoint", "x.pt"])
    cfg = from_options(RunConfig, args)
    assert cfg == RunConfig(checkpoint="x.pt")
    cli = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions}
    assert {f.name for f in fields(RunConfig)} <= cli
    args = build_parser().parse_args(["run", "--checkpoint", "x.pt", "--k", "0.1,0.2", "--methods", "saliency,shap",
                                      "--interpreters", "piq=a.pt", "--limit", "none", "--domains", "audio"])
    cfg = from_options(RunConfig, args)
    assert cfg.k == (0.1, 0.2) and cfg.methods == ["saliency", "shap"] and cfg.interpreters == {"piq": "a.pt"}
    assert cfg.limit is None and cfg.domains == ("audio",)


def test_experiments_notebook_parameters_are_run_config_fields():
    """The notebook builds a RunConfig from its parameters: same names, same defaults (paths aside)."""
    import ast

    from conftest import REPO

    from audiointerp.config import field_defaults

    nb = json.loads((REPO / "notebooks" / "experiments.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    params = {t.id: ast.literal_eval(node.value) for node in ast.parse("".join(cell["source"])).body
              for t in node.targets}
    defaults = field_defaults(RunConfig)
    for name, value in params.items():
        assert name == "checkpoint" or name in defaults, name
        if name in ("checkpoint", "results"):
            continue
        parsed = RunConfig(checkpoint="x", **{name: value})
        parsed.validate()
        ref = RunConfig(checkpoint="x")
        ref.validate()
        assert getattr(parsed, name) == getattr(ref, name), name


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
    r = _cli("tables", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "sup"))
    _one_line_error(r, "overwrite")
    r = _cli("tables", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "sup"), "--overwrite")
    assert r.returncode == 0, r.stderr


def test_run_seconds_are_recorded_per_session(esc50_env, toy_checkpoint, tmp_path):
    run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"], limit=1), progress=False)
    time.sleep(0.01)
    run(_cfg(toy_checkpoint, tmp_path, methods=["gradcam"], limit=2), progress=False)
    info = json.loads((tmp_path / "toy_mel" / "gradcam_clean" / "run.json").read_text())
    assert [h["clips_computed"] for h in info["history"]] == [1, 1]
    assert [h["limit"] for h in info["history"]] == [1, 2] and all(h["git_commit"] for h in info["history"])


def test_lime_captum_and_mixture_in_the_runner(esc50_env, toy_checkpoint, tmp_path):
    """The new methods and the mixture condition go through the same runner; their settings are
    part of the run's configuration key, and captum names give safe folder names."""
    out = run(_cfg(toy_checkpoint, tmp_path, methods=["lime", "captum:IntegratedGradients"], limit=2,
                   masks=["topK_30_pos", "bin"], lime_nsamples=20,
                   method_args={"captum:IntegratedGradients": {"n_steps": 8}}), progress=False)
    lime_dir = tmp_path / "toy_mel" / "lime-n20_clean"  # non-default settings: their own folder and label
    ig_dir = next((tmp_path / "toy_mel").glob("captum-IntegratedGradients-args-*_clean"))
    assert out["lime"]["n_clips_done"] == 2 and out["captum:IntegratedGradients"]["folder"] == str(ig_dir)
    key = json.loads((lime_dir / "run.json").read_text())["key"]
    assert key["lime_nsamples"] == 20 and key["lime_segmentation"] == "quickshift" and key["mask_rules"] == 2
    info = json.loads((ig_dir / "run.json").read_text())
    assert info["method"] == "captum:IntegratedGradients" and info["key"]["method_args"] == {"n_steps": 8}
    with pytest.raises(ResultsError, match="seed"):  # the same variant with another seed: refused
        run(_cfg(toy_checkpoint, tmp_path, methods=["lime"], limit=2, masks=["topK_30_pos", "bin"],
                 lime_nsamples=20, seed=1), progress=False)
    with pytest.raises(ConfigError, match="method_args"):
        run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], method_args={"gradcam": {}}), progress=False)
    from audiointerp.tables import load_results

    labels = set(load_results(tmp_path)["method"])
    assert labels == {"lime (n20)", f"captum:IntegratedGradients ({ig_dir.name.split('-', 2)[2][:-6]})"}, labels
    assert json.loads((lime_dir / "run.json").read_text())["method_label"] == "lime (n20)"
    # the mixture condition: each clip with a seeded partner of another class, at 12 dB
    out = run(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], condition="mixture", limit=3,
                   masks=["bin"]), progress=False)
    folder = tmp_path / "toy_mel" / "saliency_mixture"
    info = json.loads((folder / "run.json").read_text())
    assert info["noise"]["snr_db_used"] == pytest.approx(12.04, abs=0.01) and info["key"]["mixture_seed"] == 0
    assert len(pd.read_csv(folder / "csvs" / "bin.csv")) == 6
    # the features are those of the mixes the audio domain hears
    from audiointerp.runner import RunContext

    ctx = RunContext(_cfg(toy_checkpoint, tmp_path, methods=["saliency"], condition="mixture"))
    from audiointerp.processing import features

    torch.testing.assert_close(ctx.features()[:3], features(ctx.condition_waveforms([0, 1, 2]), ctx.fcfg)[0])
