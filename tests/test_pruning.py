import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdjax import data as data_lib
from pdjax import masks, models, parallel, pruning, steps, train
from pdjax.types import SpecError

SCHEDULE = steps.Schedule(epochs=2, batch_size=64, lr=0.05, milestones=(1,), lr_factor=0.1, weight_decay=2e-4)


@pytest.fixture(scope="module")
def teacher(tiny_vgg11):
    return jax.device_get(models.init(tiny_vgg11, jax.random.key(0), (32, 32, 3)))


def test_masked_training_keeps_pruned_weights_exactly_zero(small_digits, tiny_vgg11, teacher):
    mesh = parallel.data_mesh()
    m = masks.prune_global(teacher["params"], masks.init(teacher["params"]), 0.6)
    optimizer = steps.sgd(dataclasses.replace(SCHEDULE, lr=0.1, weight_decay=5e-3))
    state = steps.TrainState.create(teacher, optimizer, m)
    # A stale momentum buffer (as if carried over from dense training) must not revive weights.
    state = state._replace(opt_state=jax.tree.map(jnp.ones_like, state.opt_state))
    state = parallel.replicate(state, mesh)
    step = steps.make_train_step(tiny_vgg11, optimizer, mesh, mean=small_digits.mean, std=small_digits.std)
    key = parallel.replicate(jax.random.key(0), mesh)
    for epoch in range(2):
        for batch in data_lib.train_batches(small_digits.train, 64, seed=0, epoch=epoch):
            state, _ = step(state, *parallel.put_global_batch(batch, mesh), key)
    params = jax.device_get(state.params)
    pruned_total = kept_moved = 0
    for path_params, path_mask, start in zip(jax.tree.leaves(params), jax.tree.leaves(m, is_leaf=masks.is_none),
                                             jax.tree.leaves(teacher["params"])):
        if path_mask is None:
            continue
        mk = np.asarray(path_mask)
        assert np.all(np.asarray(path_params)[~mk] == 0.0)
        pruned_total += int((~mk).sum())
        kept_moved += int(np.sum(np.asarray(path_params)[mk] != np.asarray(start)[mk]))
    assert pruned_total == masks.total(m) - masks.remaining(m) > 0
    assert kept_moved > 0.9 * masks.remaining(m)


def test_masked_optimizer_zeroes_pruned_updates_even_with_stale_moments(teacher):
    import optax

    params = teacher["params"]
    m = masks.prune_global(params, masks.init(params), 0.5)
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.3, p.dtype), params)  # nonzero everywhere
    for inner in (optax.adam(0.1), optax.adamw(0.1, weight_decay=0.1),
                  optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))):
        wrapped = masks.masked_optimizer(inner)
        # Stale moments (as if carried over from dense training) would move pruned weights.
        state = jax.tree.map(lambda x: jnp.ones_like(x) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                             wrapped.init(params))
        updates, _ = wrapped.update(grads, state, params, masks=m)
        plain, _ = inner.update(grads, state, params)
        for u, raw, mk in zip(jax.tree.leaves(updates), jax.tree.leaves(plain), jax.tree.leaves(m, is_leaf=masks.is_none)):
            if mk is None:
                continue
            mk = np.asarray(mk)
            assert np.all(np.asarray(u)[~mk] == 0.0) and np.any(np.asarray(raw)[~mk] != 0.0)
            assert np.any(np.asarray(u)[mk] != 0.0)
        # Without masks it is the optimizer itself.
        dense, _ = wrapped.update(grads, state, params)
        chex.assert_trees_all_equal(dense, plain)


def test_masked_fit_with_adam_keeps_pruned_weights_zero(small_digits, tiny_vgg11, teacher):
    import optax

    m = masks.prune_global(teacher["params"], masks.init(teacher["params"]), 0.6)
    result = train.fit(tiny_vgg11, small_digits, SCHEDULE, variables=teacher, masks=m, optimizer=optax.adam(1e-2),
                       workdir=None, seed=0, progress=False)
    moved = 0
    for p, start, mk in zip(jax.tree.leaves(result.variables["params"]), jax.tree.leaves(teacher["params"]),
                            jax.tree.leaves(m, is_leaf=masks.is_none)):
        if mk is None:
            continue
        mk = np.asarray(mk)
        assert np.all(np.asarray(p)[~mk] == 0.0)
        moved += int(np.sum(np.asarray(p)[mk] != np.asarray(start)[mk]))
    assert moved > 0.9 * masks.remaining(m)


def run_rounds(tiny_vgg11, small_digits, teacher, workdir, rounds=2, **kw):
    return pruning.iterative_pruning(tiny_vgg11, small_digits, pruning.PruneSpec(SCHEDULE, rounds=rounds),
                                     variables=teacher, workdir=workdir, seed=0, progress=False, **kw)


def test_rounds_prune_twenty_percent_of_what_is_left_and_resume_mid_round(small_digits, tiny_vgg11, teacher, tmp_path):
    whole = run_rounds(tiny_vgg11, small_digits, teacher, tmp_path / "whole")
    total = masks.total(whole[0].masks)
    left1 = total - round(0.2 * total)
    assert [masks.remaining(r.masks) for r in whole] == [left1, left1 - round(0.2 * left1)]
    summary = json.loads((tmp_path / "whole" / "rounds.json").read_text())
    assert [s["round"] for s in summary] == [1, 2]
    assert summary[1]["sparsity"] == pytest.approx(1 - (left1 - round(0.2 * left1)) / total)
    # Masks only shrink from round to round.
    for a, b in zip(jax.tree.leaves(whole[0].masks), jax.tree.leaves(whole[1].masks)):
        assert not np.any(np.asarray(b) & ~np.asarray(a))

    class Killed(Exception):
        pass

    def kill_in_round_2(k, epoch, _):
        if (k, epoch) == (2, 1):
            raise Killed

    with pytest.raises(Killed):
        run_rounds(tiny_vgg11, small_digits, teacher, tmp_path / "split", on_epoch_end=kill_in_round_2)
    seen = []
    resumed = run_rounds(tiny_vgg11, small_digits, teacher, tmp_path / "split",
                         on_epoch_end=lambda k, e, _: seen.append((k, e)))
    assert seen == [(2, 2)]  # round 1 and round 2's first epoch came from checkpoints
    for r, w in zip(resumed, whole):
        chex.assert_trees_all_equal((r.variables, r.masks), (w.variables, w.masks))
        assert r.result.test_accuracy == w.result.test_accuracy

    # Any finished round's teacher loads by its number or its target sparsity.
    variables, loaded_masks = pruning.load_round(tmp_path / "whole", teacher, round=2)
    chex.assert_trees_all_equal((variables, loaded_masks), (whole[1].variables, whole[1].masks))
    variables, _ = pruning.load_round(tmp_path / "whole", teacher, sparsity=0.36)
    chex.assert_trees_all_equal(variables, whole[1].variables)
    with pytest.raises(FileNotFoundError, match="round 4 has not finished"):
        pruning.load_round(tmp_path / "whole", teacher, sparsity=0.59)


def test_rewind_modes_choose_the_starting_weights(small_digits, tiny_vgg11, teacher, tmp_path):
    no_training = dataclasses.replace(SCHEDULE, epochs=0)
    trained = jax.tree.map(lambda x: x + 1.0, teacher)  # stands for the trained teacher

    def first_round(rewind, **kw):
        spec = pruning.PruneSpec(no_training, rounds=1, rewind=rewind)
        return pruning.iterative_pruning(tiny_vgg11, small_digits, spec, variables=trained,
                                         workdir=tmp_path / rewind, progress=False, **kw)[0]

    lr = first_round("lr")
    chex.assert_trees_all_equal(lr.variables["params"],
                 masks.apply(trained["params"], lr.masks))
    weight = first_round("weight", rewind_variables=teacher)
    chex.assert_trees_all_equal(weight.variables["params"],
                 masks.apply(teacher["params"], weight.masks))
    # The masks come from the trained weights in both modes.
    chex.assert_trees_all_equal(weight.masks, lr.masks)
    one_epoch = dataclasses.replace(SCHEDULE, epochs=1, milestones=())  # a milestone at 1 never fires
    spec = pruning.PruneSpec(one_epoch, rounds=1, rewind="finetune", finetune_lr=0.003)
    finetune = pruning.iterative_pruning(tiny_vgg11, small_digits, spec, variables=trained,
                                         workdir=tmp_path / "finetune", progress=False)[0]
    assert finetune.result.history[0]["lr"] == pytest.approx(0.003)


def test_rewind_point_keeps_one_epochs_weights(small_digits, tiny_vgg11, teacher, tmp_path):
    # Weight rewinding's target: the dense run's variables at one epoch, kept on disk or in memory.
    on_disk = pruning.RewindPoint(1, tmp_path / "teacher" / "snapshot_1")
    in_memory, initial = pruning.RewindPoint(1), pruning.RewindPoint(0)

    def keep(epoch, variables):
        for point in (on_disk, in_memory, initial):
            point(epoch, variables)

    result = train.fit(tiny_vgg11, small_digits, SCHEDULE, workdir=tmp_path / "teacher", seed=0,
                       progress=False, on_variables=keep)
    epoch_1 = on_disk.variables(teacher)
    chex.assert_trees_all_equal(epoch_1, in_memory.variables(teacher))
    chex.assert_trees_all_equal(initial.variables(teacher), teacher)  # fit's own init from seed 0
    for other in (teacher, result.variables):  # neither the start nor the end (epoch 2)
        assert not np.array_equal(epoch_1["params"]["Conv_0"]["kernel"], other["params"]["Conv_0"]["kernel"])
    # A finished run that never kept the point says so, and how to get it.
    late = pruning.RewindPoint(1, tmp_path / "teacher" / "snapshot_late")
    train.fit(tiny_vgg11, small_digits, SCHEDULE, workdir=tmp_path / "teacher", seed=0, progress=False,
              on_variables=late)
    with pytest.raises(FileNotFoundError, match="trained without keeping epoch 1.*restart=True"):
        late.variables(teacher)
    with pytest.raises(FileNotFoundError, match="train past that epoch"):
        pruning.RewindPoint(3).variables(teacher)


def test_layerwise_scope_prunes_every_layer_alike(small_digits, tiny_vgg11, teacher, tmp_path):
    spec = pruning.PruneSpec(dataclasses.replace(SCHEDULE, epochs=0), rounds=1, scope="layerwise")
    r = pruning.iterative_pruning(tiny_vgg11, small_digits, spec, variables=teacher, workdir=tmp_path,
                                  progress=False)[0]
    for m in jax.tree.leaves(r.masks):
        m = np.asarray(m)
        assert m.sum() == m.size - round(0.2 * m.size)


def test_bad_arguments(small_digits, tiny_vgg11, teacher, tmp_path):
    # The spec checks its own values, once (named as the experiments' `prune.*` keys).
    with pytest.raises(SpecError, match=r"prune.rewind='weights': use one of lr, weight, finetune"):
        pruning.PruneSpec(SCHEDULE, rewind="weights")
    with pytest.raises(SpecError, match=r"prune.scope='local': use one of global, layerwise"):
        pruning.PruneSpec(SCHEDULE, scope="local")
    with pytest.raises(SpecError, match=r"prune.fraction=1.5 must lie in \[0, 1\)"):
        pruning.PruneSpec(SCHEDULE, fraction=1.5)
    with pytest.raises(SpecError, match=r"prune.criterion='smallest': use one of magnitude, random, none"):
        pruning.PruneSpec(SCHEDULE, criterion="smallest")
    kw = dict(variables=teacher, workdir=tmp_path)
    with pytest.raises(ValueError, match="needs rewind_variables"):
        pruning.iterative_pruning(tiny_vgg11, small_digits, pruning.PruneSpec(SCHEDULE, rounds=1, rewind="weight"), **kw)
    other = models.init(models.get("vgg11", 10, widths=(2,) * 8), jax.random.key(0), (32, 32, 3))
    with pytest.raises(masks.MaskError, match=r"mask at Conv_1/kernel has shape \(3, 3, 2, 2\)"):
        pruning.iterative_pruning(tiny_vgg11, small_digits, pruning.PruneSpec(SCHEDULE, rounds=1),
                                  masks=masks.init(other["params"]), **kw)
    assert [pruning.rounds_for_sparsity(s) for s in (0.36, 0.59, 0.79)] == [2, 4, 7]
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        pruning.rounds_for_sparsity(1.0)


def test_random_round_keeps_the_magnitude_rounds_layer_counts_at_other_positions():
    # Literal layers: a 2x4 and a 3x6x7 kernel plus a bias that is never pruned.
    rng = np.random.default_rng(0)
    params = {"a": {"kernel": jnp.asarray(rng.normal(size=(2, 4)), jnp.float32), "bias": jnp.zeros(4)},
              "b": {"kernel": jnp.asarray(rng.normal(size=(3, 6, 7)), jnp.float32)}}
    start = {"a": {"kernel": jnp.ones((2, 4), bool), "bias": None}, "b": {"kernel": jnp.ones((3, 6, 7), bool)}}
    start["b"]["kernel"] = start["b"]["kernel"].at[0].set(False)  # 42 of 126 already pruned
    magnitude = pruning.prune_round(params, start, 0.5, criterion="magnitude")
    random = pruning.prune_round(params, start, 0.5, criterion="random", seed=(0, 1))
    assert masks.layer_remaining(magnitude) == masks.layer_remaining(random)
    assert sum(masks.layer_remaining(magnitude).values()) == 8 + 84 - round(0.5 * (8 + 84))
    assert jax.tree.structure(random, is_leaf=masks.is_none) == jax.tree.structure(start, is_leaf=masks.is_none)
    assert random["a"]["bias"] is None
    assert not np.array_equal(random["b"]["kernel"], magnitude["b"]["kernel"])
    assert not np.any(np.asarray(random["b"]["kernel"])[0])  # only weights still kept are chosen
    # The same seed draws the same positions; another seed other ones.
    chex.assert_trees_all_equal(random, pruning.prune_round(params, start, 0.5, criterion="random", seed=(0, 1)))
    assert not np.array_equal(pruning.prune_round(params, start, 0.5, criterion="random", seed=(0, 2))["b"]["kernel"],
                              random["b"]["kernel"])
    # Counts taken from a reference tree instead of this round's magnitude masks.
    reference = {"a": {"kernel": jnp.zeros((2, 4), bool).at[0, 0].set(True), "bias": None},
                 "b": {"kernel": jnp.zeros((3, 6, 7), bool).at[1, :2].set(True)}}
    matched = pruning.prune_round(params, start, 0.5, criterion="random", reference=reference, seed=3)
    assert masks.layer_remaining(matched) == {"a/kernel": 1, "b/kernel": 14}
    with pytest.raises(masks.MaskError, match="b/kernel: the reference keeps 126 weights, the current masks only 84"):
        masks.prune_random_like(start, masks.init(params), seed=0)
    # Dense rewinding prunes nothing.
    assert pruning.prune_round(params, start, 0.5, criterion="none") is start


def test_control_sequences_retrain_like_magnitude_pruning(small_digits, tiny_vgg11, teacher, tmp_path):
    one_epoch = dataclasses.replace(SCHEDULE, epochs=1, milestones=())  # a milestone at 1 never fires

    def sequence(criterion, **kw):
        spec = pruning.PruneSpec(one_epoch, rounds=2, criterion=criterion)
        return pruning.iterative_pruning(tiny_vgg11, small_digits, spec, variables=teacher,
                                         workdir=tmp_path / criterion, seed=0, progress=False, **kw)

    magnitude = sequence("magnitude")
    random = sequence("random", reference=[r.masks for r in magnitude])
    dense = sequence("none")
    for m, r in zip(magnitude, random):
        assert masks.layer_remaining(r.masks) == masks.layer_remaining(m.masks)
        assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(r.masks), jax.tree.leaves(m.masks)))
        assert r.summary()["sparsity"] == m.summary()["sparsity"] > 0
    for d in dense:
        assert d.summary()["sparsity"] == 0.0 and len(d.result.history) == 1
    # Round 2 of dense rewinding has trained as long as round 2 of magnitude pruning, from round 1.
    assert not np.array_equal(dense[1].variables["params"]["Conv_0"]["kernel"],
                              dense[0].variables["params"]["Conv_0"]["kernel"])
    assert [h["lr"] for h in dense[1].result.history] == [h["lr"] for h in magnitude[1].result.history]
    # The criterion is part of what produced the rounds: a directory of one is refused for another.
    from pdjax.provenance import StaleRunError
    with pytest.raises(StaleRunError, match="criterion: none there, magnitude now"):
        pruning.iterative_pruning(tiny_vgg11, small_digits, pruning.PruneSpec(one_epoch, rounds=2), variables=teacher,
                                  workdir=tmp_path / "none", seed=0, progress=False)
    with pytest.raises(ValueError, match="reference masks only apply to criterion='random'"):
        sequence("magnitude", reference=[r.masks for r in magnitude])
