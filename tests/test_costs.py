"""pdjax.costs: parameters and XLA's FLOP count of a forward pass, and side-by-side speeds."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pdjax import costs


class _Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(5, use_bias=False)(x.reshape((x.shape[0], -1)))


def test_flops_and_params_of_a_matrix_product():
    model = _Linear()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 3, 2)))
    result = costs.inference_costs(model, variables, (4, 3, 2), nonzero_params=7)
    # One image: a (1 x 24) by (24 x 5) product, 2 operations per multiply-add.
    assert result == {"params": 24 * 5, "nonzero_params": 7, "flops": 2 * 24 * 5}
    kernel = variables["params"]["Dense_0"]["kernel"]
    x = jnp.ones((2, 4, 3, 2))
    np.testing.assert_allclose(costs.forward_pass(model, variables)(x), x.reshape(2, -1) @ kernel, rtol=1e-6)


def test_throughput_compiles_first_then_keeps_each_functions_best_round():
    calls = {"a": 0, "b": 0}

    def forward(name):
        def call(images):
            calls[name] += 1
            return images
        return call

    speeds = costs.throughput({"a": forward("a"), "b": forward("b")}, np.zeros((8, 2)), repeats=3)
    assert calls == {"a": 4, "b": 4}  # one call to compile, then one per round
    assert set(speeds) == {"a", "b"} and all(s > 0 for s in speeds.values())
