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


# ---- the loss family, each against a float64 NumPy implementation written from its paper's equations


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _kl(p, log_q):
    """KL(p || q) per row, 0 log 0 = 0."""
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - log_q), 0.0)
    return terms.sum(axis=1)


def _ce(s, y):
    return -_log_softmax(s)[np.arange(len(y)), y].mean()


def reference_dkd(s, t, y, T, alpha, beta):
    """Zhao et al. 2022, eqs. 1-5: KD = TCKD + (1 - p_t^T) NCKD; DKD weights them alpha, beta."""
    p_s, p_t = np.exp(_log_softmax(np.asarray(s) / T)), np.exp(_log_softmax(np.asarray(t) / T))
    n, k = p_s.shape
    target = np.zeros((n, k), bool)
    target[np.arange(n), y] = True
    b_s = np.stack([p_s[target], 1 - p_s[target]], axis=1)
    b_t = np.stack([p_t[target], 1 - p_t[target]], axis=1)
    tckd = _kl(b_t, np.log(b_s)).mean()
    rest_s = np.where(target, 0.0, p_s) / (1 - p_s[target])[:, None]
    rest_t = np.where(target, 0.0, p_t) / (1 - p_t[target])[:, None]
    with np.errstate(divide="ignore"):
        nckd = _kl(rest_t, np.log(np.where(target, 1.0, rest_s))).mean()
    kd = T * T * (alpha * tckd + beta * nckd)
    ce = _ce(s, y)
    return ce + kd, kd, ce


def reference_dist(s, t, y, T, beta, gamma):
    """Huang et al. 2022: d_p(u, v) = 1 - Pearson(u, v); inter over each image's classes, intra
    over each class's images."""
    y_s, y_t = np.exp(_log_softmax(np.asarray(s) / T)), np.exp(_log_softmax(np.asarray(t) / T))

    def distance(a, b):
        return 1 - np.mean([np.corrcoef(u, v)[0, 1] for u, v in zip(a, b)])

    kd = T * T * (beta * distance(y_s, y_t) + gamma * distance(y_s.T, y_t.T))
    ce = _ce(s, y)
    return ce + kd, kd, ce


def reference_teacher_free(s, y, T, alpha, a):
    """Yuan et al. 2020, Tf-KD_reg: KD against p(k) = a on the label, (1 - a)/(K - 1) elsewhere,
    softened by T as logits log p."""
    n, k = np.asarray(s).shape
    p = np.full((n, k), (1 - a) / (k - 1))
    p[np.arange(n), y] = a
    p_T = np.exp(_log_softmax(np.log(p) / T))
    kd = T * T * _kl(p_T, _log_softmax(np.asarray(s) / T)).mean()
    ce = _ce(s, y)
    return alpha * kd + (1 - alpha) * ce, kd, ce


def _batch(seed, classes=10):
    """A batch whose first image has a confident teacher (one logit far above), whose second has
    a confused one (near-uniform), and the rest random."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(8, classes)) * 2
    t = rng.normal(size=(8, classes)) * 3
    t[0] = 0.0
    t[0, 3] = 25.0  # confident: p ~ 1 on class 3
    t[1] = rng.normal(size=classes) * 0.01  # confused: p ~ 1/classes
    y = rng.integers(0, classes, 8)
    y[0] = 3
    return s, t, y


@pytest.mark.parametrize("T", [1.0, 4.0, 10.0])
@pytest.mark.parametrize("loss", ["kd", "dkd", "dist", "teacher_free"])
def test_each_loss_matches_its_float64_equations(loss, T):
    s, t, y = _batch(int(T) + len(loss))
    spec = distill.KDSpec.for_loss(loss, temperature=T)
    got = distill.loss(spec, jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), jnp.asarray(y))
    want = {"kd": lambda: reference_kd(s, t, y, T, spec.alpha),
            "dkd": lambda: reference_dkd(s, t, y, T, spec.alpha, spec.beta),
            "dist": lambda: reference_dist(s, t, y, T, spec.beta, spec.gamma),
            "teacher_free": lambda: reference_teacher_free(s, y, T, spec.alpha, spec.correct_probability)}[loss]()
    np.testing.assert_allclose([float(v) for v in got], want, rtol=5e-5, atol=1e-6)
    # The public functions, called directly, are the same numbers.
    direct = {"kd": lambda: distill.kd_loss(s, t, y, T, spec.alpha),
              "dkd": lambda: distill.dkd_loss(s, t, y, T, spec.alpha, spec.beta),
              "dist": lambda: distill.dist_loss(s, t, y, T, spec.beta, spec.gamma),
              "teacher_free": lambda: distill.teacher_free_loss(s, y, T, spec.alpha, spec.correct_probability)}[loss]()
    np.testing.assert_allclose([float(v) for v in direct], [float(v) for v in got], rtol=1e-6)


def test_dkd_is_kd_when_its_weights_are_the_couplings():
    # Zhao et al.'s decomposition: KD = TCKD + (1 - p_target^t) NCKD, per image. With one image
    # and beta = 1 - p_target of the teacher, alpha = 1, DKD's kd term equals vanilla KD's.
    s, t, y = _batch(7)
    s, t, y = s[:1], t[2:3], y[:1]
    p_t = np.exp(_log_softmax(t / 4.0))[0, y[0]]
    dkd = distill.dkd_loss(s, t, y, 4.0, alpha=1.0, beta=float(1 - p_t))
    kd = distill.kd_loss(s, t, y, 4.0, alpha=1.0)
    assert float(dkd.kd) == pytest.approx(float(kd.kd), rel=1e-5)


def test_the_losses_pass_no_gradient_to_the_teacher_and_stay_finite():
    s, t, y = (jnp.asarray(v) for v in _batch(3))
    s, t = s.astype(jnp.float32), t.astype(jnp.float32)
    for loss in distill.LOSSES:
        spec = distill.KDSpec.for_loss(loss)
        g_t = jax.grad(lambda t: distill.loss(spec, s, t, y).total)(t)
        g_s = jax.grad(lambda s: distill.loss(spec, s, t, y).total)(s)
        np.testing.assert_array_equal(g_t, 0.0)
        assert np.all(np.isfinite(g_s)) and np.any(g_s != 0), loss


def test_each_spec_checks_its_values_when_built():
    from pdjax.types import SpecError

    assert distill.KDSpec() == distill.KDSpec(10.0, 0.95) == distill.KDSpec.for_loss("kd")
    assert distill.KDSpec.for_loss("dkd") == distill.KDSpec(4.0, 1.0, "dkd", beta=8.0)
    for bad, message in [(dict(loss="fitnet"), "kd.loss='fitnet': use one of kd, dkd, dist, teacher_free"),
                         (dict(temperature=0.0), "kd.temperature=0.0 must be > 0"),
                         (dict(alpha=1.5), r"kd.alpha=1.5 must lie in \[0, 1\]"),
                         (dict(loss="dkd", alpha=-1.0), "kd.alpha=-1.0 must be >= 0"),
                         (dict(loss="dist", beta=-0.1), "kd.beta=-0.1 must be >= 0"),
                         (dict(loss="dist", gamma=-2.0), "kd.gamma=-2.0 must be >= 0"),
                         (dict(loss="teacher_free", correct_probability=1.0), r"kd.correct_probability=1.0 must lie in \(0, 1\)")]:
        with pytest.raises(SpecError, match=message):
            distill.KDSpec(**bad)
    assert distill.KDSpec(loss="dkd", alpha=8.0).alpha == 8.0  # dkd's alpha is a weight, not a share
    assert not distill.KDSpec(loss="teacher_free").uses_teacher


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


def test_fit_distills_with_every_loss_one_step_each_and_teacher_free_without_a_teacher(small_digits, fresh_steps):
    student = models.get("vgg11", 10, widths=TINY_VGG11)
    teacher_model = models.get("vgg19", 10, widths=TINY_VGG19)
    teacher = distill.Teacher(teacher_model, models.init(teacher_model, jax.random.key(5), (32, 32, 3)))
    schedule = steps.Schedule(epochs=1, batch_size=64, lr=0.05, weight_decay=5e-4)
    losses = {}
    for loss in distill.LOSSES:
        spec = distill.KDSpec.for_loss(loss)
        source = teacher if spec.uses_teacher else None
        result = train.fit(student, small_digits, schedule, teacher=source, kd=spec, progress=False)
        losses[loss] = (result.history[0]["kd_loss"], result.history[0]["ce_loss"])
        assert ("teacher_accuracy" in result.history[0]) == spec.uses_teacher
    assert len(set(losses.values())) == 4  # four different losses trained
    built = [k for k in steps._STEPS if k[0] == "train"]
    assert len(built) == 4 and len({k[8] for k in built}) == 4  # one compiled step per loss (k[8]: its KDSpec)
    with pytest.raises(ValueError, match="trains without a teacher"):
        train.fit(student, small_digits, schedule, teacher=teacher, kd=distill.KDSpec(loss="teacher_free"))
