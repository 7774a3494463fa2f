# audiointerp: `make experiments` (main job) and `make test`. Both create .venv and install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The dataset root: ESC50_ROOT if set, else ../shared/ESC-50 if present, else data/ESC-50 (make data).
ESC50_ROOT ?= $(if $(wildcard ../shared/ESC-50/meta/esc50.csv),$(abspath ../shared/ESC-50),$(abspath data/ESC-50))
AUDIOINTERP_NOISES ?= $(if $(wildcard ../shared/noises),$(abspath ../shared/noises),$(abspath noises))
export ESC50_ROOT AUDIOINTERP_NOISES

CHECKPOINT ?= weights/compact_mel.pt
# every built-in method (captum:<ClassName> runs by name too, e.g. METHODS=captum:IntegratedGradients)
METHODS ?= saliency,gradcam,shap,lime,piq,l2i,lmac,lmac_ft
# LIME's samples per clip: 300 in the main job (as faithful to the 1000-sample map as two 1000-sample maps are to
# each other, scripts/lime_samples.py), the prior art's 1000 in the grid (make reproduce)
LIME_NSAMPLES ?=
LIMIT ?=
NB_OUT := results/notebooks

.PHONY: venv experiments reproduce grid grid-report tables test lint data benchmark accuracy cross-validation train-mel train-stft train-nmf train-l2i train-piq train-lmac train-lmac-ft train-cnn14 pretrained device-check overlap illustration clean-venv

venv: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The main job: mel model, clean, every built-in method, 14 masks (+ the learned methods' native masks), both
# domains, all 400 fold-5 clips, on Dask (a LocalCluster of one single-threaded worker per core, notebooks/grid.ipynb),
# then the tables. A killed run resumes where it stopped.
experiments: venv
	mkdir -p $(NB_OUT)
	$(PY) -m papermill --cwd notebooks notebooks/grid.ipynb $(NB_OUT)/experiments.ipynb \
		-p cells ../$(CHECKPOINT):clean -p methods $(METHODS) -p results ../results \
		$(if $(LIME_NSAMPLES),-p lime_nsamples $(LIME_NSAMPLES),) $(if $(LIMIT),-p limit $(LIMIT),)
	$(MAKE) --no-print-directory tables

# The full grid: (model:condition) cells, each with METHODS, 14 masks, both domains (spectrogram and
# re-synthesised audio), all 400 fold-5 clips, as tasks of (cell, method, SHARD clips) on Dask
# (python -m audiointerp grid; docs/grid.md). SCHEDULER=local starts a LocalCluster of WORKERS
# single-threaded worker processes (default: one per core); SCHEDULER=tcp://host:8786 uses a running
# cluster. Resumable: finished shards and run folders are skipped. Exit status 2 lists failed tasks.
GRID ?= compact_mel:clean compact_mel:white compact_mel:room compact_mel:horse compact_mel:mixture compact_stft:clean
SCHEDULER ?= local
WORKERS ?=
SHARD ?=
comma := ,
empty :=
space := $(empty) $(empty)
GRID_CELLS = $(subst $(space),$(comma),$(foreach c,$(GRID),weights/$(word 1,$(subst :, ,$(c))).pt:$(word 2,$(subst :, ,$(c)))))
grid: venv
	$(PY) -m audiointerp grid --cells $(GRID_CELLS) --methods $(METHODS) --scheduler $(SCHEDULER) \
		$(if $(LIME_NSAMPLES),--lime-nsamples $(LIME_NSAMPLES),) \
		$(if $(WORKERS),--workers $(WORKERS),) $(if $(SHARD),--shard $(SHARD),) $(if $(LIMIT),--limit $(LIMIT),)

# The grid with the prior art's LIME (1000 samples), then the tables and the time per cell.
reproduce: LIME_NSAMPLES = 1000
reproduce: grid
	$(MAKE) --no-print-directory tables
	$(MAKE) --no-print-directory grid-report

grid-report: venv
	$(PY) scripts/grid_report.py --results results

tables: venv
	mkdir -p $(NB_OUT)
	$(PY) -m papermill --cwd notebooks notebooks/tables.ipynb $(NB_OUT)/tables.ipynb \
		-p results ../results -p out ../supplementary -p overwrite True
	@cat supplementary/summary.md

test: venv
	$(PY) -m pytest -q

# pyflakes, import order, docstrings of public names (pyproject.toml [tool.ruff]); also run by the tests
lint: venv
	$(PY) -m ruff check audiointerp tests scripts

data: venv
	$(PY) -m audiointerp data --dest data

benchmark: venv
	$(PY) scripts/benchmark.py --checkpoint $(CHECKPOINT) --methods $(METHODS)

# One notebook for both classifiers: weights/compact_<features>.pt, its card and confusion matrix.
train-mel: venv
	mkdir -p $(NB_OUT)
	$(PY) -m papermill --cwd notebooks notebooks/train_classifier.ipynb $(NB_OUT)/train_classifier_mel.ipynb \
		-p features mel -p epochs 60 $(if $(wildcard results/cv/compact_mel/cv.json),-p cv ../results/cv/compact_mel/cv.json,)

train-stft: venv
	mkdir -p $(NB_OUT)
	$(PY) -m papermill --cwd notebooks notebooks/train_classifier.ipynb $(NB_OUT)/train_classifier_stft.ipynb \
		-p features stft -p epochs 40 $(if $(wildcard results/cv/compact_stft/cv.json),-p cv ../results/cv/compact_stft/cv.json,)

# PANNs' 16 kHz AudioSet CNN14 (Zenodo record 3987831) into pretrained/, its md5 checked.
pretrained: venv
	$(PY) -c "from audiointerp.models import download_panns_cnn14; print(download_panns_cnn14('pretrained'))"

# CNN14 fine-tuned from the PANNs weights (FEATURES=mel|stft): weights/cnn14_<features>.pt and its card. About
# 80 M parameters: a job for a GPU (DEVICE=cuda; the notebook's device defaults to auto).
DEVICE ?= auto
train-cnn14: pretrained
	mkdir -p $(NB_OUT)
	$(PY) -m papermill --cwd notebooks notebooks/train_classifier.ipynb $(NB_OUT)/train_cnn14_$(FEATURES).ipynb \
		-p features $(FEATURES) -p architecture Cnn14 -p pretrained ../pretrained/Cnn14_16k_mAP=0.438.pth \
		-p lr 1e-4 -p epochs 30 -p device $(DEVICE)

# The GPU check (scripts/device_check.py): one training epoch and the main job on 16 clips on DEVICE and on the CPU.
device-check: venv
	$(PY) scripts/device_check.py --device $(if $(filter auto,$(DEVICE)),cuda,$(DEVICE)) --clips 16

# Fold-5 accuracy of CHECKPOINT with a bootstrap 95% CI, per-class accuracy, confusion matrix (prints figures).
accuracy: venv
	$(PY) scripts/accuracy.py --checkpoint $(CHECKPOINT)

# 5-fold cross-validation of the recipe (FEATURES=mel|stft): results/cv/compact_<features>/cv.json. Resumable.
FEATURES ?= mel
cross-validation: venv
	mkdir -p $(NB_OUT)
	$(PY) -m papermill --cwd notebooks notebooks/cross_validation.ipynb $(NB_OUT)/cross_validation_$(FEATURES).ipynb \
		-p features $(FEATURES) $(if $(filter stft,$(FEATURES)),-p epochs 40,)

# NMF dictionary, L2I, PIQ and L-MAC for a classifier (MODEL=compact_mel or compact_stft): notebooks/train_*.ipynb.
MODEL ?= compact_mel
train-nmf train-l2i train-piq train-lmac: train-%: venv
	mkdir -p $(NB_OUT)
	$(PY) -m papermill --cwd notebooks notebooks/train_$*.ipynb $(NB_OUT)/train_$*_$(MODEL).ipynb \
		-p checkpoint ../weights/$(MODEL).pt -p out ../weights/$*_$(MODEL).pt

# L-MAC FT: guided fine-tuning of weights/lmac_$(MODEL).pt on mixtures (notebooks/train_lmac.ipynb, guided=True).
train-lmac-ft: venv
	mkdir -p $(NB_OUT)
	$(PY) -m papermill --cwd notebooks notebooks/train_lmac.ipynb $(NB_OUT)/train_lmac_ft_$(MODEL).ipynb \
		-p checkpoint ../weights/$(MODEL).pt -p out ../weights/lmac_ft_$(MODEL).pt -p guided True \
		-p init ../weights/lmac_$(MODEL).pt

# The overlap test of the learned interpreters' paper (L2I), for every method (LIME at the grid's 1000 samples):
# supplementary/overlap/.
overlap: venv
	for model in compact_mel compact_stft; do \
		$(PY) scripts/overlap.py --checkpoint weights/$$model.pt --methods $(METHODS) --lime-nsamples 1000 \
			--threads 2 --out supplementary/overlap; done

# The illustration (notebooks/illustration.ipynb, headless) with every method, LIME at the grid's 1000 samples:
# supplementary/illustration/ (png and scores; the wavs are gitignored).
illustration: venv
	mkdir -p $(NB_OUT)
	$(PY) -m papermill --cwd notebooks notebooks/illustration.ipynb $(NB_OUT)/illustration.ipynb \
		-p checkpoint ../$(CHECKPOINT) -p methods $(METHODS) -p lime_nsamples 1000 -p interactive False

clean-venv:
	rm -rf $(VENV)
