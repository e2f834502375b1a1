"""One process of the multi-host test (tests/test_multihost.py).

    python multihost_worker.py OUT PROCESS_ID NUM_PROCESSES DEVICES_PER_PROCESS PORT

With NUM_PROCESSES > 1 it joins JAX's distributed runtime on localhost:PORT (CPU collectives
over gloo), builds the global mesh over every process's devices, feeds only its own rows of
each global batch, runs four chained train steps, then one step from the initial state on each of
the same batches, and an evaluation, and (process 0 only) writes the results to OUT as JSON.
"""

import json
import sys

import jax

out, process_id, num_processes, devices, port = sys.argv[1], *map(int, sys.argv[2:])
jax.config.update("jax_num_cpu_devices", devices)
if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=num_processes,
                               process_id=process_id, initialization_timeout=60)

import numpy as np  # noqa: E402

from pdjax import data as data_lib  # noqa: E402
from pdjax import models, parallel, steps  # noqa: E402

mesh = parallel.data_mesh()
model = models.get("vgg11", 10, widths=models.scaled_widths("vgg11", 1 / 32))
variables = models.init(model, jax.random.key(0), (32, 32, 3))
rng = np.random.default_rng(0)  # every process builds the same global data
images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
labels = rng.integers(0, 10, (64,), dtype=np.int32)
split = data_lib.Split(images, labels)
schedule = steps.Schedule(epochs=1, batch_size=16, lr=0.05, weight_decay=5e-4)
optimizer = steps.sgd(schedule)


def fresh_state():
    # The step donates its state: each use gets its own replicated copy.
    return parallel.replicate(steps.TrainState.create(variables, optimizer), mesh)


def flat(params):
    return [np.asarray(p).ravel().tolist() for p in jax.tree.leaves(jax.device_get(params))]


initial = flat(variables["params"])

step = steps.make_train_step(model, optimizer, mesh, mean=(127.0,) * 3, std=(64.0,) * 3)
key = jax.random.key(1)
batches = list(data_lib.train_batches(split, 16, seed=0, epoch=0))
# The training loop's way: four chained steps.
state, losses = fresh_state(), []
for batch in batches:
    state, metrics = step(state, *parallel.put_global_batch(batch, mesh), key)
    losses.append(float(metrics["loss"]))
# Each batch's step from the same initial state: what one step computes, without the growth of
# rounding differences over chained steps.
single = []
for batch in batches:
    after, metrics = step(fresh_state(), *parallel.put_global_batch(batch, mesh), key)
    single.append({"loss": float(metrics["loss"]), "params": flat(after.params)})
eval_step = steps.make_eval_step(model, mesh, mean=(127.0,) * 3, std=(64.0,) * 3)
evaluation = steps.evaluate(eval_step, fresh_state().variables, split, 24, mesh)
if parallel.is_main_process():
    with open(out, "w") as f:
        json.dump({"processes": jax.process_count(), "devices": jax.device_count(),
                   "losses": losses, "single_steps": single, "evaluation": evaluation,
                   "initial_params": initial}, f)
