import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdjax import data as data_lib
from pdjax import distill, masks, models, parallel, steps, train

from conftest import TINY_VGG11

TINY_VGG19 = (2, 2, 4, 4, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8)


def reference_kd(s, t, y, T, alpha):
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)

    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    p_t = np.exp(log_softmax(t / T))
    kl = np.sum(p_t * (np.log(p_t) - log_softmax(s / T)), axis=1).mean()
    ce = -log_softmax(s)[np.arange(len(y)), y].mean()
    return alpha * T * T * kl + (1 - alpha) * ce, T * T * kl, ce


@pytest.mark.parametrize("T, alpha", [(10.0, 0.95), (1.0, 0.5), (4.0, 0.0), (2.0, 1.0), (20.0, 0.9)])
def test_kd_loss_matches_a_float64_formula(T, alpha):
    rng = np.random.default_rng(int(T * 10 + alpha * 100))
    s = rng.normal(size=(16, 100)) * 3
    t = rng.normal(size=(16, 100)) * 5
    y = rng.integers(0, 100, 16)
    got = distill.kd_loss(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), jnp.asarray(y), T, alpha)
    want = reference_kd(s, t, y, T, alpha)
    np.testing.assert_allclose([float(v) for v in got], want, rtol=2e-5, atol=1e-6)


def test_kd_loss_by_hand():
    # Two classes. Teacher logits (0, 0): p_t = (1/2, 1/2). Student logits (T ln 3, 0) at T = 2:
    # p_s = (3/4, 1/4). KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3); kd = T^2 KL = 2 ln(4/3).
    # CE with label 1 on logits (2 ln 3, 0): ln(1 + 9) = ln 10.
    s = jnp.array([[2 * np.log(3.0), 0.0]])
    t = jnp.zeros((1, 2))
    parts = distill.kd_loss(s, t, jnp.array([1]), temperature=2.0, alpha=0.25)
    assert float(parts.kd) == pytest.approx(2 * np.log(4 / 3), rel=1e-6)
    assert float(parts.ce) == pytest.approx(np.log(10.0), rel=1e-6)
    assert float(parts.total) == pytest.approx(0.25 * 2 * np.log(4 / 3) + 0.75 * np.log(10.0), rel=1e-6)
    same = distill.kd_loss(s, s, jnp.array([0]), temperature=3.0, alpha=0.5)
    assert float(same.kd) == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_refuses_mismatched_shapes():
    s, t, y = jnp.zeros((4, 10)), jnp.zeros((4, 10)), jnp.zeros((4,), jnp.int32)
    with pytest.raises(AssertionError, match="equal_shape"):
        distill.kd_loss(s, jnp.zeros((4, 100)), y)  # a teacher of another data set's classes
    with pytest.raises(AssertionError, match="shape"):
        distill.kd_loss(s, t, jnp.zeros((8,), jnp.int32))
    with pytest.raises(AssertionError, match="rank"):
        distill.kd_loss(jnp.zeros((4, 10, 1)), jnp.zeros((4, 10, 1)), y)


def test_no_gradient_reaches_the_teacher_logits():
    t = jnp.ones((2, 3))
    g = jax.grad(lambda t: distill.kd_loss(jnp.zeros((2, 3)), t, jnp.array([0, 1])).total)(t)
    np.testing.assert_array_equal(g, 0.0)


@pytest.fixture(scope="module")
def setup():
    digits = data_lib.load("digits")
    student = models.get("vgg11", 10, widths=TINY_VGG11)
    teacher = models.get("vgg19", 10, widths=TINY_VGG19)
    tv = jax.device_get(models.init(teacher, jax.random.key(5), (32, 32, 3)))
    return digits, student, teacher, tv


def kd_steps(setup, mesh, teacher_variables_list, n_steps=2):
    digits, student, teacher, _ = setup
    schedule = steps.Schedule(epochs=1, batch_size=16, lr=0.05, weight_decay=5e-4)
    optimizer = steps.sgd(schedule)
    state = parallel.replicate(steps.TrainState.create(
        models.init(student, jax.random.key(0), (32, 32, 3)), optimizer), mesh)
    step = steps.make_train_step(student, optimizer, mesh, mean=digits.mean, std=digits.std, teacher=teacher)
    key = parallel.replicate(jax.random.key(1), mesh)
    batches = list(data_lib.train_batches(digits.train, 16, seed=0, epoch=0))
    metrics = []
    for tv in teacher_variables_list:
        tv_dev = parallel.replicate(tv, mesh)
        for batch in batches[:n_steps]:
            state, m = step(state, *parallel.put_global_batch(batch, mesh), key, tv_dev)
            metrics.append(m)
        chex.assert_trees_all_equal(jax.device_get(tv_dev), tv)  # teacher untouched
    return jax.device_get(state), jax.device_get(metrics), step


def test_kd_step_updates_only_the_student_and_compiles_once(setup, fresh_steps):
    _, _, _, tv = setup
    pruned = {"params": masks.apply(tv["params"], masks.prune_global(tv["params"], masks.init(tv["params"]), 0.5)),
              "batch_stats": tv["batch_stats"]}
    state, metrics, step = kd_steps(setup, parallel.data_mesh(), [tv, pruned])
    assert step.traces == 1  # one compiled step serves the dense and the pruned teacher
    assert set(metrics[0]) == {"loss", "accuracy", "kd_loss", "ce_loss", "teacher_accuracy"}
    for m in metrics:
        assert float(m["loss"]) == pytest.approx(0.95 * float(m["kd_loss"]) + 0.05 * float(m["ce_loss"]), rel=1e-5)
    assert int(state.step) == 4


def test_kd_step_on_eight_devices_equals_one(setup):
    _, _, _, tv = setup
    one, m1, _ = kd_steps(setup, parallel.data_mesh(jax.devices()[:1]), [tv], n_steps=3)
    eight, m8, _ = kd_steps(setup, parallel.data_mesh(), [tv], n_steps=3)
    chex.assert_trees_all_close(one.params, eight.params, rtol=2e-4, atol=2e-5)
    assert [float(m["kd_loss"]) for m in m1] == pytest.approx([float(m["kd_loss"]) for m in m8], rel=1e-4)


def test_fit_with_a_teacher_records_kd_metrics(setup, tmp_path):
    digits, student, teacher, tv = setup
    schedule = steps.Schedule(epochs=1, batch_size=64, lr=0.05, weight_decay=5e-4)
    result = train.fit(student, digits, schedule, workdir=tmp_path, progress=False,
                       teacher=distill.Teacher(teacher, tv), kd=distill.KDSpec(4.0, 0.5))
    record = result.history[0]
    assert {"kd_loss", "ce_loss", "teacher_accuracy"} <= set(record)
    assert record["train_loss"] == pytest.approx(0.5 * record["kd_loss"] + 0.5 * record["ce_loss"], rel=1e-4)
