"""Shared fixtures: a tiny synthetic ESC-50 root and a toy classifier checkpoint."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

# Cached features of test runs go to a throw-away folder, never to the user's cache.
os.environ.setdefault("AUDIOINTERP_CACHE", tempfile.mkdtemp(prefix="audiointerp-test-cache-"))
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["dog", "rain", "siren"]

#: Source of a user's own classifiers (written to a temporary file by the tests that bring their own model):
#: TinyNet honours the contract; Broken, WrongShape and NoCam break it.
USER_MODEL = """
import torch
import torch.nn as nn


class TinyNet(nn.Module):
    \"\"\"A user's classifier: features [batch, 1, n_freq, n_frames] -> logits [batch, n_classes].\"\"\"

    def __init__(self, n_freq=64, n_classes=3, width=4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.fc = nn.Linear(width, n_classes)

    @property
    def cam_layer(self):
        return self.conv

    def forward(self, x):
        return self.fc(torch.relu(self.conv((x + 50) / 50)).mean(dim=(2, 3)))


class Broken(TinyNet):
    def forward(self, x):
        return super().forward(x).sum(1)


class WrongShape(TinyNet):
    def forward(self, x):
        return super().forward(x)[:, :1]


class NoCam(nn.Module):
    def __init__(self, n_freq=64, n_classes=3):
        super().__init__()
        self.fc = nn.Linear(n_freq, n_classes)

    def forward(self, x):
        return self.fc(x.mean(-1)[:, 0])
"""


def make_synthetic_esc50(root: Path, per_fold: int = 2, sr: int = 22050, duration: float = 1.0) -> Path:
    """An ESC-50-shaped folder: 5 folds x 3 classes x ``per_fold`` clips, FLAC at ``sr`` Hz.

    Class c is a tone at 300*(c+1)**2 Hz plus seeded noise; official-style names ending .wav.
    """
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(exist_ok=True)
    rows = []
    t = np.arange(int(sr * duration)) / sr
    for fold in range(1, 6):
        for c, name in enumerate(CLASSES):
            for j in range(per_fold):
                src = 100000 + 100 * fold + 10 * c + j
                fname = f"{fold}-{src}-A-{c}.wav"
                y = 0.5 * np.sin(2 * np.pi * 300 * (c + 1) ** 2 * t + rng.uniform(0, 6)) + 0.05 * rng.standard_normal(len(t))
                sf.write(root / "audio" / fname.replace(".wav", ".flac"), y.astype(np.float32), sr)
                rows.append({"filename": fname, "fold": fold, "target": c, "category": name,
                             "esc10": False, "src_file": src, "take": "A"})
    pd.DataFrame(rows).to_csv(root / "meta" / "esc50.csv", index=False)
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """Path of the tiny synthetic ESC-50 root (session-wide, read-only by convention)."""
    return make_synthetic_esc50(tmp_path_factory.mktemp("esc50"))


@pytest.fixture(scope="session")
def toy_checkpoint(tmp_path_factory) -> Path:
    """A seeded, untrained small CompactCNN on 1-s mel features, 3 classes, saved as a checkpoint."""
    from audiointerp.models import CompactCNN, save_checkpoint
    from audiointerp.processing import FeatureConfig

    torch.manual_seed(0)
    args = {"n_freq": 64, "n_classes": 3, "channels": (4, 8, 8, 8)}
    model = CompactCNN(**args).eval()
    # Give BatchNorm non-trivial running statistics so eval outputs depend on the input scale.
    with torch.no_grad():
        model.norm.bn.running_mean.fill_(-40.0)
        model.norm.bn.running_var.fill_(400.0)
    path = tmp_path_factory.mktemp("ckpt") / "toy_mel.pt"
    save_checkpoint(path, model, args, FeatureConfig(kind="mel", duration=1.0), CLASSES, metrics={"test_acc": 0.0})
    return path


@pytest.fixture
def esc50_env(monkeypatch, synthetic_root):
    """ESC50_ROOT pointing at the synthetic root."""
    monkeypatch.setenv("ESC50_ROOT", str(synthetic_root))
    return synthetic_root


def real_root():
    """The real ESC-50 root from ESC50_ROOT, or None when unset or incomplete."""
    root = os.environ.get("ESC50_ROOT")
    if root and (Path(root) / "meta" / "esc50.csv").is_file() and (Path(root) / "audio").is_dir():
        return Path(root)
    return None
