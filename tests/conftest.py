"""Tests run on 8 fake CPU devices, so sharded code is exercised without accelerators."""

import os
import tempfile
from pathlib import Path

# The suite is bound by XLA compilation. XLA:CPU's backend at optimisation level 0 compiles the
# same HLO programs 2-8x faster (measured: a VGG19 init 19 s -> 3 s; the demo smoke's train
# steps 43 s -> 21 s in all), and the little data the tests run does not miss optimised code.
# Below level 2, XLA's experimental YNNPACK dot fusion (pdjax.xla_flags, a CPU speed setting)
# computes some one-device steps differently (loss 2.4088 vs 2.4100 after one step of the
# 1-vs-8-device check in test_train.py): the suite runs without it. Users' settings (level 2,
# YNNPACK dots) keep their own check: test_train.py::test_device_checks_pass_with_pdjax_xla_defaults.
# Subprocesses (crash, multi-host tests) inherit these settings; the example notebook's kernel runs
# with a user's (test_notebook.py).
TEST_ENV = {"XLA_FLAGS": "--xla_backend_optimization_level=0", "PDJAX_XLA_DEFAULTS": "0"}
if os.environ.get("PDJAX_TEST_USER_XLA") != "1":
    os.environ["PDJAX_XLA_DEFAULTS"] = TEST_ENV["PDJAX_XLA_DEFAULTS"]
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_ENV['XLA_FLAGS']}".strip()

# fit checkpoints at most once a minute by default (pdjax.checkpoints.CHECKPOINT_SECONDS); the tests'
# stages take seconds, so they checkpoint every epoch, as their resume and crash tests expect
# (test_train.py tests the interval itself). Subprocesses inherit it.
os.environ["PDJAX_CHECKPOINT_SECONDS"] = "0"

import jax  # noqa: E402

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
# The same for the processes the tests launch (experiments killed and resumed, multi-host runs,
# the notebook's kernel): they inherit the cache and keep every program in it, however quick to
# compile. Without the thresholds a launched experiment recompiled ~85 programs JAX's default
# (1 s) leaves out: 3.3 s of each launch's 16 s (one CPU core, warm cache).
os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

import pytest  # noqa: E402

SHARED_CIFAR10 = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10-jpeg.zip"


def pytest_collection_modifyitems(items):
    """The longest tests first, by their `slow(seconds)` marks (measured on 2 cores): the workers
    take tests in this order (pyproject.toml: --dist loadgroup, no reordering), so they end
    together, not one waiting out the other's last long test."""
    def seconds(item):
        mark = item.get_closest_marker("slow")
        return mark.args[0] if mark else 0

    items.sort(key=seconds, reverse=True)  # stable: the rest keep their order


@pytest.fixture
def shared_cifar10() -> Path:
    """The shared CIFAR-10 JPEG zip; tests that need it skip where a clone has no ../shared."""
    if not SHARED_CIFAR10.exists():
        pytest.skip(f"shared CIFAR-10 zip not found at {SHARED_CIFAR10} (fresh clone without ../shared)")
    return SHARED_CIFAR10.resolve()


@pytest.fixture
def test_env() -> dict[str, str]:
    """The XLA settings of the suite (above), for subprocesses given a clean environment."""
    return dict(TEST_ENV)


@pytest.fixture(autouse=True)
def _quiet_tqdm(monkeypatch):
    os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def fresh_steps(monkeypatch):
    """This process without the steps earlier tests built, for tests that count traces:
    pdjax.steps keeps built steps for reuse, and an earlier test in the same worker may have
    traced one for another batch shape (which worker runs which test changes from run to run)."""
    import collections

    from pdjax import steps

    monkeypatch.setattr(steps, "_STEPS", collections.OrderedDict())


@pytest.fixture(scope="module")
def small_digits():
    """700 of the embedded digits (630 train, 70 validation after the hold-out): quick stages."""
    from pdjax import data

    return data.load("digits", max_train=700)


# A VGG11 2-8 channels wide: the tests' model where any small network does.
TINY_VGG11 = (2, 4, 4, 4, 8, 8, 8, 8)


@pytest.fixture(scope="module")
def tiny_vgg11():
    """A VGG11 2-8 channels wide, for the digits' 10 classes."""
    from pdjax import models

    return models.get("vgg11", 10, widths=TINY_VGG11)
