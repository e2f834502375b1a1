"""pdjax.compilation: the persistent cache's switch and place, and cheap one-off compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdjax import compilation


@pytest.fixture
def jax_cache_settings():
    """Restores JAX's cache settings (the suite's own cache) after the test."""
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {k: getattr(jax.config, k) for k in keys}
    yield
    for k, v in saved.items():
        jax.config.update(k, v)


def test_the_cache_is_off_moved_or_left_as_the_user_set_it(tmp_path, monkeypatch, jax_cache_settings):
    users = jax.config.jax_compilation_cache_dir  # the suite set one, as a user may
    monkeypatch.setenv(compilation.ENV, "0")
    assert compilation.enable_cache() is None
    monkeypatch.setenv(compilation.ENV, "")
    assert str(compilation.enable_cache()) == users  # a directory given to JAX is kept
    assert compilation.enable_cache(tmp_path / "xla") == tmp_path / "xla"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == compilation.MIN_COMPILE_SECONDS
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv(compilation.ENV, str(tmp_path / "moved"))
    assert compilation.enable_cache() == tmp_path / "moved"
    monkeypatch.setenv(compilation.ENV, "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    jax.config.update("jax_compilation_cache_dir", None)
    assert compilation.enable_cache() == tmp_path / "home" / "pdjax" / "xla"


def test_one_off_computes_what_jit_does_and_works_under_another_transformation():
    # Another optimisation level may round elementwise functions differently (tanh here, by
    # 1 ulp); the models' initial values, bit for bit, are tests/test_models.py's check.
    fn = lambda x: jnp.tanh(x @ x.T).sum(axis=0)
    x = jax.random.normal(jax.random.key(0), (16, 8))
    np.testing.assert_allclose(compilation.one_off(fn)(x), jax.jit(fn)(x), rtol=1e-5, atol=1e-6)
    shape = jax.eval_shape(compilation.one_off(fn), x)  # no compiler options inside a trace
    assert shape.shape == (16,)


def test_one_off_never_compiles_above_the_level_the_user_set(monkeypatch):
    for flags, level in (("", 1), ("--xla_backend_optimization_level=2", 1),
                         ("--xla_cpu_foo=1 --xla_backend_optimization_level=0", 0),
                         ("--xla_backend_optimization_level=3", 1)):
        monkeypatch.setenv("XLA_FLAGS", flags)
        assert compilation.one_off_options() == {"xla_backend_optimization_level": level}, flags
