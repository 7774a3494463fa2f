"""Notebooks run headless (papermill) on a tiny configuration and are committed without outputs."""

import json

import pytest
from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_and_parameterised(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert all("id" in c for c in nb["cells"])  # nbformat 4.5 cell ids (papermill and nbformat need them)
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in code) == 1


@pytest.mark.slow
def test_experiments_and_tables_notebooks_run_headless(tmp_path, synthetic_root, toy_checkpoint, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("ESC50_ROOT", str(synthetic_root))
    results = tmp_path / "results"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "experiments.ipynb"), str(tmp_path / "experiments.out.ipynb"),
        parameters={"checkpoint": str(toy_checkpoint), "methods": "saliency,gradcam,shap", "limit": 2,
                    "shap_nsamples": 2, "results": str(results)},
        cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
    for method in ("saliency", "gradcam", "shap"):
        folder = f"{method}-n2_clean" if method == "shap" else f"{method}_clean"  # 2 draws: SHAP's variant
        assert len((results / "toy_mel" / folder / "csvs" / "topK_5_pos.csv").read_text().splitlines()) == 1 + 2 * 2
    papermill.execute_notebook(
        str(REPO / "notebooks" / "tables.ipynb"), str(tmp_path / "tables.out.ipynb"),
        parameters={"results": str(results), "out": str(tmp_path / "sup")},
        cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
    assert (tmp_path / "sup" / "summary.md").read_text().count("|") > 10
    for name in ("accuracy.md", "accuracy.tex", "conditions_topK_30_pos_spectrogram.csv", "tables.md",
                 "figures/accuracy.png", "figures/conditions_topK_30_pos_toy_mel_spectrogram.png"):
        assert (tmp_path / "sup" / name).is_file(), name
    executed = json.loads((tmp_path / "tables.out.ipynb").read_text())
    text = json.dumps([c.get("outputs") for c in executed["cells"]])
    assert "FF ↑" in text or "FF \\u2191" in text
    assert "image/png" in text


@pytest.mark.slow
def test_train_notebook_runs_headless(tmp_path, synthetic_root, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("ESC50_ROOT", str(synthetic_root))
    out = tmp_path / "tiny_mel.pt"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "train_classifier.ipynb"), str(tmp_path / "train.out.ipynb"),
        parameters={"features": "mel", "epochs": 1, "limit": 6, "out": str(out)},
        cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
    from audiointerp.models import load_classifier

    _, ex, ckpt = load_classifier(out)
    assert ckpt["training"]["epochs"] == 1 and ex.cfg.kind == "mel"
    card = out.with_suffix(".md").read_text()
    assert "fold-5 (test) accuracy" in card and "bootstrap CI" in card and "| siren |" in card
    assert (tmp_path / "tiny_mel_confusion.png").stat().st_size > 0


@pytest.mark.slow
def test_cross_validation_notebook_runs_headless(tmp_path, synthetic_root, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("ESC50_ROOT", str(synthetic_root))
    papermill.execute_notebook(
        str(REPO / "notebooks" / "cross_validation.ipynb"), str(tmp_path / "cv.out.ipynb"),
        parameters={"features": "mel", "epochs": 1, "limit": 3, "folds": [3, 4, 5], "out_dir": str(tmp_path / "cv")},
        cwd=str(REPO / "notebooks"), progress_bar=False, kernel_name="python3")
    cv = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert [r["test_fold"] for r in cv["folds"]] == [3, 4, 5] and cv["n_folds"] == 3
    executed = json.loads((tmp_path / "cv.out.ipynb").read_text())
    assert "3-fold cross-validation accuracy" in json.dumps([c.get("outputs") for c in executed["cells"]])
