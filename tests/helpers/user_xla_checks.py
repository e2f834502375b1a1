"""Checks that only make sense with a user's XLA settings (XLA:CPU backend level 2, pdjax's CPU
flags), not the suite's level 0 (conftest.py). Not collected by the suite (no test_ prefix):
tests/test_train.py::test_device_checks_pass_with_pdjax_xla_defaults runs them in a process of
their own with PDJAX_TEST_USER_XLA=1."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdjax import models


@pytest.mark.parametrize("name", ["vgg19", "resnet18"])  # plain and residual convolutions, BatchNorm
def test_cheap_init_compile_gives_the_values_of_a_full_one(name):
    # models.init compiles at XLA:CPU backend level 1 (pdjax.compilation.one_off): a one-off
    # function need not be optimised, and its values must be level 2's, bit for bit (level 0's
    # are not: this test fails with level 0 in ONE_OFF_OPTIONS).
    assert os.environ.get("PDJAX_TEST_USER_XLA") == "1", "run with a user's XLA settings (see the docstring)"
    model = models.get(name, 10, widths=models.scaled_widths(name, 1 / 32))
    cheap = models.init(model, jax.random.key(3), (32, 32, 3))
    full = jax.jit(lambda key: model.init({"params": key}, jnp.zeros((1, 32, 32, 3)), train=False),
                   compiler_options={"xla_backend_optimization_level": 2})(jax.random.key(3))
    for a, b in zip(jax.tree.leaves(cheap), jax.tree.leaves(dict(full))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
