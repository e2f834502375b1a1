"""pdjax.parallel: the data mesh, batches split over it, state replicated on it (the steps that
use them are tested against one device in test_train.py and test_distill.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdjax import parallel


def test_a_global_batch_is_split_over_the_data_axis_in_order():
    mesh = parallel.data_mesh()
    assert mesh.axis_names == (parallel.DATA_AXIS,) and mesh.devices.size == 8
    images, labels = np.arange(16 * 3, dtype=np.float32).reshape(16, 3), np.arange(16)
    x, y = parallel.put_global_batch((images, labels), mesh)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    # Device i holds rows 2i and 2i + 1.
    for shard in x.addressable_shards:
        i = list(mesh.devices.flat).index(shard.device)
        np.testing.assert_array_equal(shard.data, images[2 * i:2 * i + 2])
    parallel.check_batch_size(16, mesh)
    with pytest.raises(ValueError, match="not divisible by the 8 devices of the mesh; use a multiple of 8"):
        parallel.check_batch_size(12, mesh)


def test_replicated_state_never_aliases_the_callers_arrays():
    # On a one-device mesh, a plain device_put hands back the caller's own buffer, and a step
    # that donates it deletes the caller's array; `replicate` must copy.
    mesh = parallel.data_mesh(jax.devices()[:1])
    donating = jax.jit(lambda a: a + 1, donate_argnums=0, out_shardings=parallel.replicated(mesh))
    aliased = jnp.ones((3,))
    donating(jax.device_put(aliased, parallel.replicated(mesh)))
    assert aliased.is_deleted()  # the hazard is real in this JAX version
    x = jnp.ones((3,))
    donating(parallel.replicate(x, mesh))
    assert not x.is_deleted()
    np.testing.assert_array_equal(x, [1.0, 1.0, 1.0])
