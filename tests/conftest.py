"""Tests run on 8 fake CPU devices, so sharded code is exercised without accelerators."""

import os
from pathlib import Path

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_platforms", "cpu")

import pytest  # noqa: E402

SHARED_CIFAR10 = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10-jpeg.zip"


@pytest.fixture
def shared_cifar10() -> Path:
    """The shared CIFAR-10 JPEG zip; tests that need it skip where a clone has no ../shared."""
    if not SHARED_CIFAR10.exists():
        pytest.skip(f"shared CIFAR-10 zip not found at {SHARED_CIFAR10} (fresh clone without ../shared)")
    return SHARED_CIFAR10.resolve()


@pytest.fixture(autouse=True)
def _quiet_tqdm(monkeypatch):
    os.environ.setdefault("TQDM_DISABLE", "1")
