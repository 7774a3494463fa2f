"""Where tensors live: one way to name and check a compute device for every job.

Every job (training classifiers and interpreters, the runner, evaluation, the overlap test, the
illustration) takes ``device = "auto" | "cpu" | "cuda" | "cuda:N" | "mps"``; :func:`resolve_device`
turns it into a :class:`torch.device` or one clear error, and :func:`describe_device` gives what run
records and model cards store. ``auto`` is CUDA when a CUDA device is available, else the CPU (MPS
is used only when asked for by name: some operators the pipeline needs, e.g. the complex STFT, are
not complete on every MPS build).
"""

from __future__ import annotations

import functools
import platform

import torch

from .errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The :class:`torch.device` of a device name, checked to exist on this machine.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` (the current
            CUDA device), ``"cuda:N"`` (GPU N), ``"mps"`` (Apple), a ``torch.device``, or None
            (= ``"auto"``).

    Returns:
        the device (``cuda`` is given its index, e.g. ``cuda:0``).

    Raises:
        ConfigError: an unknown name, or a device that is not present here (the name and what
            is present are quoted).
    """
    if device is None:
        device = "auto"
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("device 'mps' was asked for, but no Apple MPS device is available here "
                              "(use device='cpu' or 'auto')")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for, but CUDA is not available here (torch "
                              f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use device='cpu' "
                              f"or 'auto'")
        n = torch.cuda.device_count()
        if name == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        index = name.split(":", 1)[1]
        if not index.isdigit() or int(index) >= n:
            raise ConfigError(f"device {device!r} was asked for, but this machine has {n} CUDA device(s): "
                              f"{', '.join(f'cuda:{i}' for i in range(n))}")
        return torch.device("cuda", int(index))
    raise ConfigError(f"unknown device {device!r}; valid devices: {', '.join(DEVICE_CHOICES)}")


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """This machine's CPU model and its widest x86 vector extension, e.g. ``"AMD EPYC (avx2)"`` or
    ``"Intel(R) Xeon(R) Platinum 8480C (avx512)"``: what changes the speed and the float rounding of
    CPU runs (kernels differ per extension). Read from ``/proc/cpuinfo`` on Linux, else
    :func:`platform.processor`; ``"unknown"`` when neither says."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or "unknown"
    simd = next((f for f in ("avx512f", "avx2", "avx") if f in flags), None)
    return f"{model} ({simd.replace('avx512f', 'avx512')})" if simd else model


def describe_device(device: torch.device) -> dict:
    """What a run record or model card stores about ``device``: its name, type, (GPU) model and the
    host's CPU model (:func:`cpu_model`: CPU timings and float rounding depend on it).

    Returns:
        ``{"device": "cuda:0", "type": "cuda", "name": "NVIDIA H200", "cpu": "AMD EPYC (avx2)",
        "torch": "2.11.0", "cuda": "12.8"}`` (``name`` is ``"cpu"`` on the CPU; ``cuda`` is None off
        CUDA).
    """
    device = torch.device(device)
    name = "cpu"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = "Apple MPS"
    return {"device": str(device), "type": device.type, "name": name, "cpu": cpu_model(), "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None}
