"""Tests run on 8 fake CPU devices, so sharded code is exercised without accelerators."""

import os
import tempfile
from pathlib import Path

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_platforms", "cpu")
# Many tests compile the same steps (fresh closures, same programs): share compiled code, also
# between the workers of one `pytest -n` run (they share PYTEST_XDIST_TESTRUNUID).
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
_CACHE = (os.path.join(tempfile.gettempdir(), f"pdjax-test-jax-cache-{_RUN}") if _RUN
          else tempfile.mkdtemp(prefix="pdjax-test-jax-cache-"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

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


@pytest.fixture(scope="module")
def small_digits():
    """700 of the embedded digits (630 train, 70 validation after the hold-out): quick stages."""
    from pdjax import data

    return data.load("digits", max_train=700)


@pytest.fixture(scope="module")
def tiny_vgg11():
    """A VGG11 2-8 channels wide, for the digits' 10 classes."""
    from pdjax import models

    return models.get("vgg11", 10, widths=(2, 4, 4, 4, 8, 8, 8, 8))
