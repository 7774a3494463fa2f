"""The experiment grid on Dask: the sequential run's bytes, worker deaths, bad clips, resume, the
shared caches and the CLI. One small 2-worker LocalCluster (processes, one thread each) serves
the module and is always closed."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import audiointerp.grid as grid
from audiointerp.errors import ConfigError, DatasetError, ResultsError
from audiointerp.grid import GridConfig, GridError, compute_shard, run_grid
from audiointerp.runner import RunConfig, run

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import this module

REPO = Path(__file__).resolve().parents[1]
METHODS = ["saliency", "shap"]
COMMON = dict(methods=METHODS, chunk=2, shap_nsamples=2, masks=["minmax", "topK_30_pos", "bin"])


def _run_name(m: str) -> str:
    """The run folder's method part: SHAP with 2 draws (COMMON) is SHAP's ``n2`` variant."""
    return f"{m}-n2" if m == "shap" else m


def _grid_cfg(ckpt, results, conditions=("clean", "white_gen"), **kw):
    return GridConfig(cells=[f"{ckpt}:{c}" for c in conditions], results=str(results), shard=2,
                      **{**COMMON, **kw})


def _outputs(results: Path) -> dict:
    """Every CSV and attribution map under a results root, as bytes."""
    return {p.relative_to(results).as_posix(): p.read_bytes() for p in sorted(results.rglob("*"))
            if p.is_file() and (p.suffix == ".npy" or p.parent.name == "csvs")}


@pytest.fixture(scope="module")
def client():
    """A 2-worker LocalCluster: processes, one thread each, short timeouts; closed at the end."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.comm.timeouts.connect": "30s", "distributed.scheduler.allowed-failures": 3}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                               worker_dashboard_address=None)
        c = Client(cluster)
        try:
            yield c
        finally:
            c.close()
            cluster.close()


@pytest.fixture(scope="module")
def one_thread():
    """The sequential reference runs at the workers' torch thread count (1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synthetic_root, toy_checkpoint, one_thread):
    """The sequential run of the grid's cells (clean and white_gen), one torch thread."""
    res = tmp_path_factory.mktemp("sequential")
    old = os.environ.get("ESC50_ROOT")
    os.environ["ESC50_ROOT"] = str(synthetic_root)
    try:
        for cond in ("clean", "white_gen"):
            run(RunConfig(checkpoint=str(toy_checkpoint), condition=cond, results=str(res), **COMMON), progress=False)
    finally:
        os.environ.pop("ESC50_ROOT") if old is None else os.environ.__setitem__("ESC50_ROOT", old)
    return res


def slow_first_shard(task, prepared):
    """The first shard of each run folder lands last, so assembly must restore clip order."""
    import time

    if task.positions[0] == 0:
        time.sleep(1.5)
    return compute_shard(task, prepared)


def test_grid_gives_the_sequential_runs_bytes(client, reference, esc50_env, toy_checkpoint, tmp_path, one_thread):
    res = tmp_path / "grid"
    events = []
    out = run_grid(_grid_cfg(toy_checkpoint, res), client=client, progress=False, shard_fn=slow_first_shard,
                   on_task=events.append)
    assert out.failed == [] and out.tasks == 2 + 4 * 3  # a preparation per cell, 3 shards per run folder
    assert _outputs(res) == _outputs(reference)  # every CSV and attribution map, byte for byte
    assert len(_outputs(res)) == 4 * (3 + 6)
    for folder in (res / "toy_mel").iterdir():
        info = json.loads((folder / "run.json").read_text())
        assert info["status"] == "complete" and info["n_clips_done"] == 6
        assert info["timings"]["grid"]["shards"] == 3 and info["timings"]["torch_threads"] == 1
        ref = json.loads((reference / "toy_mel" / folder.name / "run.json").read_text())
        assert info["key"] == ref["key"] and info["dataset"] == ref["dataset"] and info["accuracy"] == ref["accuracy"]
        assert not (folder / "shards").exists()  # shards are removed once assembled
        df = pd.read_csv(folder / "csvs" / "minmax.csv")
        assert df["sample"].tolist() == [s for c in (0, 2, 4) for _ in ("spectrogram", "audio") for s in (c, c + 1)]
    assert sorted(e["status"] for e in events) == ["done"] * 14
    # the white_gen features are a content-addressed cache entry, computed once
    from audiointerp.settings import cache_dir

    assert len(list(cache_dir().glob("noisy-mel-*.pt"))) >= 1


def test_second_grid_run_computes_nothing(client, esc50_env, toy_checkpoint, tmp_path, monkeypatch):
    res = tmp_path / "grid"
    cfg = _grid_cfg(toy_checkpoint, res, conditions=("clean",), methods=["saliency"])
    assert run_grid(cfg, client=client, progress=False).failed == []
    before = {p: p.read_bytes() for p in res.rglob("*") if p.is_file()}

    def refuse(*a, **k):
        raise AssertionError("a finished grid must not be locked, written or computed")

    for name in ("run_lock", "write_json", "write_text_atomic", "make_folder", "compute_shard"):
        monkeypatch.setattr(grid, name, refuse)
    again = run_grid(_grid_cfg(toy_checkpoint, res, conditions=("clean",), methods=["saliency"]), client=client,
                     progress=False, shard_fn=refuse)
    assert again.tasks == 0 and again.failed == []
    assert again.cells == {"toy_mel/saliency_clean": {"folder": str(res / "toy_mel" / "saliency_clean"),
                                                      "finished": True, "clips_computed": 0}}
    assert {p: p.read_bytes() for p in res.rglob("*") if p.is_file()} == before


def dying_shard(task, prepared):
    """Kill this worker process once, mid-task: after the shard is computed, before its commit."""
    marker = Path(task.folder).parents[1] / "killed-once"
    if task.positions[0] == 2 and not marker.exists():
        marker.write_text(str(os.getpid()))
        grid.os.rename = lambda *a, **k: os._exit(1)  # this process dies at the commit
    return compute_shard(task, prepared)


def test_killed_worker_costs_only_its_task(client, reference, esc50_env, toy_checkpoint, tmp_path, one_thread):
    res = tmp_path / "grid"
    out = run_grid(_grid_cfg(toy_checkpoint, res, conditions=("clean",)), client=client, progress=False,
                   shard_fn=dying_shard)
    assert (res / "killed-once").is_file()  # a worker did die mid-task
    assert out.failed == []
    want = {k: v for k, v in _outputs(reference).items() if "_clean/" in k}
    assert _outputs(res) == want  # complete, nothing written twice, the sequential bytes
    for m in METHODS:
        df = pd.read_csv(res / "toy_mel" / f"{_run_name(m)}_clean" / "csvs" / "bin.csv")
        assert not df.duplicated(["filename", "domain"]).any() and len(df) == 12


@pytest.fixture
def nan_root(tmp_path, synthetic_root, monkeypatch):
    """A copy of the synthetic root whose clip 2 of fold 5 is a NaN WAV; ESC50_ROOT points at it."""
    root = tmp_path / "esc50"
    shutil.copytree(synthetic_root, root)
    bad = root / "audio" / "5-100510-A-1.flac"
    original = bad.read_bytes()
    bad.unlink()
    sf.write(bad.with_suffix(".wav"), np.full(22050, np.nan, dtype=np.float32), 22050, subtype="FLOAT")
    monkeypatch.setenv("ESC50_ROOT", str(root))
    return root, bad, original


def test_bad_clip_fails_its_shard_only_then_resumes(client, reference, nan_root, toy_checkpoint, tmp_path,
                                                    one_thread):
    root, bad, original = nan_root
    res = tmp_path / "grid"
    out = run_grid(_grid_cfg(toy_checkpoint, res, conditions=("clean",)), client=client, progress=False)
    assert sorted(t for t, _ in out.failed) == ["toy_mel/saliency_clean clips 2-3", "toy_mel/shap-n2_clean clips 2-3"]
    for _, error in out.failed:
        assert "5-100510-A-1.wav" in error and "NaN" in error and "\n" not in error
    with pytest.raises(GridError, match=r"2 of 7 grid tasks failed.*\[toy_mel/saliency_clean clips 2-3\].*"
                                        r"5-100510-A-1.wav") as err:
        out.raise_for_failures()
    assert "\n" not in str(err.value)
    for m in METHODS:  # the other shards finished and wait, committed, for the next run
        folder = res / "toy_mel" / f"{_run_name(m)}_clean"
        assert out.cells[f"toy_mel/{_run_name(m)}_clean"]["failed"] == [f"toy_mel/{_run_name(m)}_clean clips 2-3"]
        assert sorted(p.name[:11] for p in (folder / "shards").iterdir()) == ["00000-00001", "00004-00005"]
        assert not (folder / "run.json").exists() and not (folder / "csvs").exists()
    # the committed shards as another CPU would have written them: other bytes, the same inputs up to rounding
    for info_file in res.rglob("shard.json"):
        info = json.loads(info_file.read_text())
        info["inputs"] = "0" * 64
        info["fingerprint"]["features"] = [[v + 2e-4 for v in row] for row in info["fingerprint"]["features"]]
        info_file.write_text(json.dumps(info))
    # fix the clip: the next run computes the failed shards only and assembles the sequential run's bytes
    bad.with_suffix(".wav").unlink()
    bad.write_bytes(original)
    again = run_grid(_grid_cfg(toy_checkpoint, res, conditions=("clean",)), client=client, progress=False)
    assert again.failed == []
    assert _outputs(res) == {k: v for k, v in _outputs(reference).items() if "_clean/" in k}
    for m in METHODS:
        assert again.cells[f"toy_mel/{_run_name(m)}_clean"]["grid"]["computed_now"] == 1


def _fake_shard(folder: Path, inputs: str, fingerprint) -> SimpleNamespace:
    """A committed shard folder of two clips and one mask, and the task it answers."""
    task = SimpleNamespace(name="00000-00001-abc", files=("a.wav", "b.wav"), masks=("bin",))
    (folder / "rows").mkdir(parents=True)
    (folder / "rows" / "bin.csv").write_text("")
    info = {"format": grid.SHARD_FORMAT, "name": task.name, "files": list(task.files), "masks": list(task.masks),
            "inputs": inputs}
    if fingerprint is not None:
        info["fingerprint"] = fingerprint
    (folder / "shard.json").write_text(json.dumps(info))
    return task


def test_fingerprint_tolerates_rounding_but_not_other_inputs(tmp_path):
    g = torch.Generator().manual_seed(0)
    feats = -80 + 60 * torch.rand(3, 1, 16, 40, generator=g)  # dB
    probs = torch.softmax(torch.randn(3, 5, generator=g), 1)
    fp = grid.inputs_fingerprint(feats, probs)
    assert len(fp["features"]) == 3 and len(fp["features"][0]) == 2 + grid.FINGERPRINT_DIRECTIONS
    assert fp["argmax"] == probs.argmax(1).tolist()
    rounded = grid.inputs_fingerprint(feats * (1 + 1e-6), probs + 1e-7)  # another CPU's rounding
    assert grid.fingerprints_match(fp, rounded)
    louder = feats.clone()
    louder[1, :, :4, :4] += 0.5  # 0.5 dB on 16 of 640 bins of one clip
    assert not grid.fingerprints_match(fp, grid.inputs_fingerprint(louder, probs))
    other = feats.clone()
    other[2] = -80 + 60 * torch.rand(1, 16, 40, generator=g)  # a replaced clip
    assert not grid.fingerprints_match(fp, grid.inputs_fingerprint(other, probs))
    swapped = probs.clone()
    swapped[0, [1, 3]] = swapped[0, [3, 1]]
    assert not grid.fingerprints_match(fp, grid.inputs_fingerprint(feats, swapped))
    assert not grid.fingerprints_match(None, fp) and not grid.fingerprints_match({"argmax": [0]}, fp)
    with pytest.raises(ValueError, match="3 clips of features but 2"):
        grid.inputs_fingerprint(feats, probs[:2])
    # a committed shard: reused bitwise, or by fingerprint; a shard without one (written before them) only bitwise
    task = _fake_shard(tmp_path / "new", "x" * 64, fp)
    assert grid._shard_valid(tmp_path / "new", task, "x" * 64, None)
    assert grid._shard_valid(tmp_path / "new", task, "y" * 64, rounded)
    assert not grid._shard_valid(tmp_path / "new", task, "y" * 64, grid.inputs_fingerprint(other, probs))
    legacy = _fake_shard(tmp_path / "legacy", "x" * 64, None)
    assert grid._shard_valid(tmp_path / "legacy", legacy, "x" * 64, fp)
    assert not grid._shard_valid(tmp_path / "legacy", legacy, "y" * 64, fp)


def test_interrupted_assembly_is_completed_by_the_next_run(client, reference, esc50_env, toy_checkpoint, tmp_path,
                                                           monkeypatch, one_thread):
    res = tmp_path / "grid"
    cfg = dict(conditions=("clean",), methods=["saliency"])
    real = grid.write_text_atomic
    calls = []

    def dying(path, text):  # the driver is killed while it writes the second CSV
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real(path, text)

    monkeypatch.setattr(grid, "write_text_atomic", dying)
    with pytest.raises(KeyboardInterrupt):
        run_grid(_grid_cfg(toy_checkpoint, res, **cfg), client=client, progress=False)
    folder = res / "toy_mel" / "saliency_clean"
    assert (folder / "shards" / grid.JOURNAL).is_file()
    monkeypatch.setattr(grid, "write_text_atomic", real)
    out = run_grid(_grid_cfg(toy_checkpoint, res, **cfg), client=client, progress=False, shard_fn=_no_compute)
    assert out.failed == [] and out.tasks == 0  # the journal finished the assembly: nothing to compute
    assert _outputs(res) == {k: v for k, v in _outputs(reference).items() if "saliency_clean/" in k}
    assert json.loads((folder / "run.json").read_text())["status"] == "complete"
    assert not (folder / "shards").exists()


def _no_compute(task, prepared):
    raise AssertionError("nothing should be computed")


def test_grid_refuses_a_folder_of_another_configuration(client, esc50_env, toy_checkpoint, tmp_path):
    run(RunConfig(checkpoint=str(toy_checkpoint), results=str(tmp_path), methods=["saliency"], limit=2, chunk=2,
                  masks=["bin"]), progress=False)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ResultsError, match="another configuration"):
        run_grid(_grid_cfg(toy_checkpoint, tmp_path, conditions=("clean",), methods=["saliency"]), client=client,
                 progress=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_results_move_little_between_thread_counts(esc50_env, toy_checkpoint, tmp_path):
    """Byte identity holds at one thread count; between 1 and 2 torch threads the float reductions
    are ordered differently. State how far the logged numbers move (docs/grid.md has the real model's)."""
    frames = {}
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            run(RunConfig(checkpoint=str(toy_checkpoint), results=str(tmp_path / str(threads)), **COMMON),
                progress=False)
            frames[threads] = {m: pd.read_csv(tmp_path / str(threads) / "toy_mel" / f"{_run_name(m)}_clean" / "csvs" / "bin.csv")
                               for m in METHODS}
    finally:
        torch.set_num_threads(before)
    for m in METHODS:
        a, b = frames[1][m], frames[2][m]
        assert a[["sample", "domain", "label", "pred"]].equals(b[["sample", "domain", "label", "pred"]])
        for col in ("FF", "AD", "AG", "SPS", "COMP", "recon_snr_db"):
            assert np.allclose(a[col], b[col], rtol=1e-4, atol=1e-4), (m, col, (a[col] - b[col]).abs().max())


def test_noisy_features_are_cached_by_content(synthetic_root, tmp_path, monkeypatch):
    from audiointerp import processing
    from audiointerp.data import ESC50
    from audiointerp.noise import NoiseSpec
    from audiointerp.scoring import condition_features

    monkeypatch.setenv("AUDIOINTERP_CACHE", str(tmp_path / "cache"))
    cfg = processing.FeatureConfig(kind="mel", duration=1.0)
    ds = ESC50(synthetic_root, (5,), 16000, 1.0)
    first = condition_features(ds, cfg, NoiseSpec("white_gen"))
    assert len(list((tmp_path / "cache").glob("noisy-mel-*.pt"))) == 1

    def boom(*a, **k):
        raise AssertionError("recomputed")

    with monkeypatch.context() as m:
        m.setattr(processing, "features", boom)
        assert torch.equal(condition_features(ESC50(synthetic_root, (5,), 16000, 1.0), cfg, NoiseSpec("white_gen")),
                           first)
        for other in (NoiseSpec("white_gen", snr_db=0.0), NoiseSpec("white_gen", offset=0.5), NoiseSpec("pink")):
            with pytest.raises(AssertionError, match="recomputed"):  # another level, offset or file: another entry
                condition_features(ds, cfg, other)


def test_shap_background_is_one_cache_entry(esc50_env, toy_checkpoint, monkeypatch):
    from audiointerp import interpret, runner
    from audiointerp.settings import cache_dir

    ctx = runner.RunContext(RunConfig(checkpoint=str(toy_checkpoint), methods=["shap"]))
    bg = ctx.shap_background()
    entries = set(cache_dir().glob("shap-background-mel-*.pt"))  # other tests of the session may add theirs
    assert bg.shape == (3 * 2, 1, 64, 101) and len(entries) >= 1
    monkeypatch.setattr(runner, "shap_background", lambda *a, **k: pytest.fail("recomputed"))
    assert torch.equal(runner.RunContext(RunConfig(checkpoint=str(toy_checkpoint))).shap_background(), bg)
    assert set(cache_dir().glob("shap-background-mel-*.pt")) == entries  # read, not written again
    assert torch.equal(bg, interpret.shap_background(None, ctx.fcfg, 2, 0))


@pytest.mark.parametrize("kw, word", [({"shard": 3}, "multiple of chunk"), ({"cells": []}, "no cells"),
                                      ({"cells": ["nowhere.pt:clean"]}, "nowhere.pt"),
                                      ({"scheduler": "my laptop"}, "scheduler"),
                                      ({"scheduler": "tcp://h:8786", "workers": 2}, "workers"),
                                      ({"workers": 0}, "workers"), ({"torch_threads": 0}, "torch_threads"),
                                      ({"methods": ["saliency", "magic"]}, "magic")])
def test_bad_grid_configuration_is_one_clear_error(toy_checkpoint, tmp_path, kw, word):
    base = dict(cells=[f"{toy_checkpoint}:clean"], results=str(tmp_path), chunk=2, shard=2)
    with pytest.raises(ConfigError, match=word):
        GridConfig(**{**base, **kw}).validate()


def test_grid_options_are_the_config_fields():
    from dataclasses import fields

    from audiointerp.__main__ import build_parser
    from audiointerp.config import from_options

    parser = build_parser()
    args = parser.parse_args(["grid", "--cells", "a.pt:clean,b.pt:white", "--shard", "24", "--workers", "2",
                              "--methods", "saliency"])
    cfg = from_options(GridConfig, args)
    assert cfg == GridConfig(cells=["a.pt:clean", "b.pt:white"], shard=24, workers=2, methods=["saliency"])
    assert cfg.cell_pairs() == [("a.pt", "clean"), ("b.pt", "white")]
    cli = {a.dest for a in parser._subparsers._group_actions[0].choices["grid"]._actions}
    assert {f.name for f in fields(GridConfig)} - {"checkpoint", "condition"} <= cli


def test_grid_notebook_parameters_are_config_fields():
    import ast

    from audiointerp.config import field_defaults

    nb = json.loads((REPO / "notebooks" / "grid.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    params = {t.id: ast.literal_eval(node.value) for node in ast.parse("".join(cell["source"])).body
              for t in node.targets}
    defaults = field_defaults(GridConfig)
    for name, value in params.items():
        assert name in defaults, name
        if name not in ("cells", "results"):
            assert value == defaults[name] or (isinstance(defaults[name], list) and value == ",".join(defaults[name])), name


def _cli(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "audiointerp", *args], capture_output=True, text=True, env=e,
                          timeout=300)


def _one_line_error(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


def test_cli_grid_errors_are_one_line(toy_checkpoint, tmp_path, synthetic_root):
    env = {"ESC50_ROOT": str(synthetic_root), "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    base = ["grid", "--results", str(tmp_path), "--chunk", "2"]
    _one_line_error(_cli(*base, "--cells", f"{toy_checkpoint}:clean", "--shard", "3", env=env), "multiple of chunk")
    _one_line_error(_cli(*base, "--cells", "missing.pt:clean", "--shard", "2", env=env), "missing.pt")
    _one_line_error(_cli(*base, "--cells", f"{toy_checkpoint}:underwater", "--shard", "2", env=env), "underwater")
    _one_line_error(_cli(*base, "--cells", f"{toy_checkpoint}:clean", "--shard", "2", "--methods", "lime2", env=env),
                    "lime2")
    _one_line_error(_cli(*base, "--cells", f"{toy_checkpoint}:clean", "--shard", "2", "--scheduler",
                         "tcp://127.0.0.1:9", "--limit", "2", env=env), "cannot reach the Dask scheduler")


def test_cli_grid_with_a_bad_clip_lists_it_and_exits_2(nan_root, toy_checkpoint, tmp_path):
    root, _, _ = nan_root
    r = _cli("grid", "--cells", f"{toy_checkpoint}:clean", "--methods", "saliency", "--masks", "bin", "--chunk", "2",
             "--shard", "2", "--workers", "1", "--results", str(tmp_path / "res"), env={"ESC50_ROOT": str(root)})
    _one_line_error(r, "1 of 4 grid tasks failed", "toy_mel/saliency_clean clips 2-3", "5-100510-A-1.wav")
    summary = json.loads(r.stdout)
    assert summary["failed"][0]["task"] == "toy_mel/saliency_clean clips 2-3"


def test_dataset_problem_before_any_task_is_one_error(toy_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("ESC50_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="nowhere"):
        run_grid(_grid_cfg(toy_checkpoint, tmp_path, conditions=("clean",)), client=None, progress=False)


@pytest.mark.slow
def test_grid_notebook_runs_headless(tmp_path, synthetic_root, toy_checkpoint, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("ESC50_ROOT", str(synthetic_root))
    res = tmp_path / "res"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "grid.ipynb"), str(tmp_path / "grid.out.ipynb"),
        parameters={"cells": f"{toy_checkpoint}:clean", "methods": "saliency", "limit": 4, "chunk": 2, "shard": 2,
                    "workers": 1, "results": str(res)},
        cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
    assert len((res / "toy_mel" / "saliency_clean" / "csvs" / "bin.csv").read_text().splitlines()) == 1 + 4 * 2
    text = json.dumps([c.get("outputs") for c in json.loads((tmp_path / "grid.out.ipynb").read_text())["cells"]])
    assert "Dask dashboard" in text and "toy_mel/saliency_clean clips 2-3" in text  # the link and the task table


def test_lime_tasks_are_scheduled_before_cheaper_ones():
    """LIME's priority grows with its samples (1000: ~13 Saliency clips); unknown methods count as 1."""
    assert grid.method_weight("lime", 1000) > grid.method_weight("shap") > grid.method_weight("saliency") == 1.0
    assert grid.method_weight("lime", 300) < grid.method_weight("lime", 1000)
    assert grid.method_weight("IntegratedGradients") == 1.0


def _fake_run(results, model, folder, seconds, shards, computed, wall, n=32, sessions=1, start=1_000_000, cpu=None):
    out = results / model / folder
    out.mkdir(parents=True)
    finished = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start + wall))
    hist = [{"seconds": seconds / sessions, "attribution_seconds": seconds / sessions / 2, "finished": finished,
             "grid": {"shards": shards, "computed_now": computed, "wall_seconds": wall}} for _ in range(sessions)]
    (out / "run.json").write_text(json.dumps({"model": model, "condition": folder.rpartition("_")[2],
                                              "history": hist, "n_clips_done": n, "accuracy": {"x": 0.5},
                                              "device": {"type": "cpu", **({"cpu": cpu} if cpu else {})}}))


def test_timing_report_per_folder_cell_and_speedup(tmp_path):
    """Worker seconds sum over a folder's sessions; a cell's speedup is its worker over its wall time,
    given only when every folder of the cell ran in one grid session."""
    _fake_run(tmp_path, "m", "saliency_clean", 100.0, 2, 2, 40.0)
    _fake_run(tmp_path, "m", "lime-n1000_clean", 300.0, 2, 2, 150.0)
    _fake_run(tmp_path, "m", "saliency_white", 100.0, 2, 1, 60.0, sessions=2)
    folders, cells = grid.timing_report(tmp_path)
    by = {(f["condition"], f["method"]): f for f in folders}
    assert by["clean", "lime-n1000"]["seconds_per_task"] == 150.0
    assert by["clean", "saliency"]["seconds_per_clip"] == 100.0 / 32
    assert by["white", "saliency"]["worker_seconds"] == 100.0 and not by["white", "saliency"]["one_session"]
    # the split of a clip's time, summed over the sessions; None where run.json lacks it
    assert by["white", "saliency"]["attribution_per_clip"] == 50.0 / 32
    assert by["white", "saliency"]["audio_per_clip"] is None
    cell = {c["condition"]: c for c in cells}
    assert cell["clean"]["worker_seconds"] == 400.0 and cell["clean"]["wall_seconds"] == 150.0
    assert cell["clean"]["speedup"] == pytest.approx(400.0 / 150.0)
    assert cell["white"]["speedup"] is None
    (tmp_path / "m" / "piq_clean" / "shards" / "00000-00015-abc").mkdir(parents=True)
    cell = {c["condition"]: c for c in grid.timing_report(tmp_path)[1]}
    assert cell["clean"]["pending_shards"] == 1 and cell["clean"]["speedup"] is None
    # a folder computed whole, but by a later session: the cell's wall is no longer one session's
    _fake_run(tmp_path, "m", "saliency_room", 100.0, 2, 2, 40.0)
    _fake_run(tmp_path, "m", "lime_room", 300.0, 2, 2, 150.0, start=1_000_000 + 3600, cpu="AMD EPYC (avx2)")
    cell = {c["condition"]: c for c in grid.timing_report(tmp_path)[1]}
    assert cell["room"]["worker_seconds"] == 400.0 and cell["room"]["speedup"] is None
    # the CPU models a cell's folders were assembled on (run.json files before it was recorded have none)
    assert cell["room"]["cpus"] == ["AMD EPYC (avx2)"] and cell["clean"]["cpus"] == []
    # the grid block of the last session names the CPUs of every shard (legacy shards: "not recorded")
    info = json.loads((tmp_path / "m" / "saliency_room" / "run.json").read_text())
    info["history"][-1]["grid"]["cpus"] = {"Intel Xeon (avx512)": 1, "not recorded": 1}
    (tmp_path / "m" / "saliency_room" / "run.json").write_text(json.dumps(info))
    cell = {c["condition"]: c for c in grid.timing_report(tmp_path)[1]}
    assert cell["room"]["cpus"] == ["AMD EPYC (avx2)", "Intel Xeon (avx512)", "not recorded"]
    with pytest.raises(ResultsError, match="no run.json"):
        grid.timing_report(tmp_path / "empty")
