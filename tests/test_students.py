import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdjax import masks, models, students


def vgg_masks(model_name, remaining, widths=None, num_classes=10):
    """Masks of a `model_name` network whose conv i keeps exactly remaining[i] weights."""
    model = models.get(model_name, num_classes, widths=widths)
    params = jax.eval_shape(lambda: models.init(model, jax.random.key(0), (32, 32, 3)))["params"]
    out = masks.init(params)
    for i, r in enumerate(remaining):
        k = out[f"Conv_{i}"]["kernel"]
        out[f"Conv_{i}"]["kernel"] = (jnp.arange(k.size) < r).reshape(k.shape)
    return out


def test_vgg_chain_rule_by_hand():
    # vgg11 at widths (8, 16, 16, 16, 32, 32, 32, 32); remaining weights chosen per layer.
    remaining = [108, 600, 1000, 900, 2000, 4000, 100, 0]
    m = vgg_masks("vgg11", remaining, widths=(8, 16, 16, 16, 32, 32, 32, 32))
    # c1 = round(108 / (9*3)) = 4; c2 = round(600 / 36) = round(16.67) = 17; c3 = round(1000/153) = 7;
    # c4 = round(900/63) = 14; c5 = round(2000/126) = 16; c6 = round(4000/144) = 28;
    # c7 = round(100/252) = 0 -> 1 (never below 1); c8 = round(0/9) = 0 -> 1.
    assert students.student_widths("vgg11", m, "chain") == (4, 17, 7, 14, 16, 28, 1, 1)


def test_vgg_chain_oscillates_and_balanced_does_not_while_matching_the_count():
    # A uniformly 75%-sparse vgg19: the exact chain alternates wide and narrow layers.
    teacher = models.default_widths("vgg19")
    fan_in = (3,) + teacher[:-1]
    m = vgg_masks("vgg19", [round(0.25 * 9 * a * b) for a, b in zip(fan_in, teacher)], num_classes=100)
    chain = students.student_widths("vgg19", m, "chain")
    balanced = students.student_widths("vgg19", m, "balanced")
    assert chain[:4] == (16, 64, 32, 128)  # 0.25 * 64 * 3 * 9 / 27 = 16, then 64*64*0.25*9/(9*16) = 64, ...
    chain_ratios = np.array(chain) / np.array(teacher)
    ratios = np.array(balanced) / np.array(teacher)
    assert chain_ratios.max() / chain_ratios.min() > 3
    # About half the teacher's width everywhere; the first layer's input (3 channels) is fixed,
    # so its density can only be met by its own width, which the smoothness term pulls up.
    assert ratios.max() / ratios.min() < 1.35 and np.all(np.abs(ratios[1:] - 0.5) < 0.01)
    rows = {r["rule"]: r for r in students.compare_rules("vgg19", m, 100)}
    assert set(rows) == {"chain", "balanced", "uniform"}
    # The uniform student: every width near one common factor of the teacher's (rounding apart),
    # with as many weights as the chain student.
    uniform = np.array(rows["uniform"]["widths"]) / np.array(teacher)
    assert uniform.max() - uniform.min() < 1 / 64 and rows["uniform"]["widths"] != list(teacher)
    assert rows["uniform"]["student_weights"] == pytest.approx(rows["chain"]["student_weights"], rel=0.01)
    for rule in ("chain", "balanced"):
        # conv weights match; the dense classifier adds its own.
        assert rows[rule]["student_weights"] == pytest.approx(
            masks.remaining(m) - 512 * 100 + rows[rule]["widths"][-1] * 100, rel=0.01)


@pytest.mark.parametrize("model_name", ["resnet18", "mobilenetv2"])
@pytest.mark.xdist_group("initial_params")  # the worker of tests/test_models.py's initialisation tests
def test_resnet_and_mobilenet_students_match_the_pruned_teacher_within_2_percent(model_name):
    # Initialised for 64x64 images, as tests/test_models.py does: the same weights as for 32x32
    # (global pooling), and the same compiled program, which that worker then has.
    params = models.init(models.get(model_name, 200), jax.random.key(0), (64, 64, 3))["params"]
    dense = masks.init(params)
    previous = None
    for rounds in (2, 4, 7):  # 36%, 59%, 79% sparsity
        m = masks.prune_global(params, dense, 1 - 0.8**rounds)
        rows = {r["rule"]: r for r in students.compare_rules(model_name, m, 200)}
        assert set(rows) == {"chain", "uniform"}
        row = rows["chain"]
        assert abs(row["ratio"] - 1) < 0.02, (rounds, row)
        # The uniform student: the teacher's widths times one factor, and the chain student's size.
        uniform = np.array(rows["uniform"]["widths"], float)
        factors = uniform / np.array(models.default_widths(model_name))
        assert factors.max() - factors.min() < 2 / min(models.default_widths(model_name)), factors
        assert abs(rows["uniform"]["student_weights"] / row["student_weights"] - 1) < 0.03, rows
        assert all(w >= 1 for w in row["widths"])
        if previous is not None:  # sparser teacher, narrower student
            assert row["student_weights"] < previous
        previous = row["student_weights"]
    if model_name == "resnet18":
        assert len(row["widths"]) == 4
    else:
        assert len(row["widths"]) == 9


def test_masks_of_another_model_are_refused():
    m = vgg_masks("vgg11", [10] * 8)
    with pytest.raises(masks.MaskError, match="masks do not belong to vgg19: missing Conv_8/kernel"):
        students.student_widths("vgg19", m)
    with pytest.raises(masks.MaskError, match="masks do not belong to resnet18: missing BasicBlock_0"):
        students.student_widths("resnet18", m)
    with pytest.raises(ValueError, match="unknown width rule"):
        students.student_widths("vgg11", m, "greedy")
    with pytest.raises(ValueError, match="defined for VGG models"):
        students.student_widths("resnet18", m, "balanced")


def test_vgg16_tiny_head_continues_the_chain():
    model = models.get("vgg16_tiny", 200, widths=(8,) * 13 + (64, 64))
    params = jax.eval_shape(lambda: models.init(model, jax.random.key(0), (64, 64, 3)))["params"]
    m = masks.init(params)
    for i in range(13):  # every conv keeps half: chain widths 8*... computed below
        k = m[f"Conv_{i}"]["kernel"]
        m[f"Conv_{i}"]["kernel"] = (jnp.arange(k.size) < k.size // 2).reshape(k.shape)
    # Dense_0: 32 inputs (2x2 pixels x 8 channels) x 64 outputs, keeps 640 -> h1 = 640 / (4 * c_13).
    m["Dense_0"]["kernel"] = (jnp.arange(32 * 64) < 640).reshape(32, 64)
    m["Dense_1"]["kernel"] = (jnp.arange(64 * 64) < 300).reshape(64, 64)
    widths = students.student_widths("vgg16_tiny", m, image_shape=(64, 64, 3))
    convs = widths[:13]
    assert convs[0] == round(3 * 3 * 3 * 8 / 2 / 27)  # 108 kept / 27 = 4
    assert widths[13] == round(640 / (4 * convs[-1])) and widths[14] == round(300 / widths[13])
    models.get("vgg16_tiny", 200, widths=widths)  # buildable


class SmallNet(nn.Module):
    """A user's own network, not in pdjax: a conv, a strided stage with a 1x1 skip, a hidden
    dense layer and a classifier; three widths."""

    widths: tuple[int, int, int]

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(self.widths[0], (3, 3))(x))
        x = nn.relu(nn.Conv(self.widths[1], (3, 3), strides=2)(x) + nn.Conv(self.widths[1], (1, 1), strides=2, name="skip")(x))
        x = nn.relu(nn.Dense(self.widths[2])(x.mean(axis=(1, 2))))
        return nn.Dense(10)(x)


SMALL_NET_GROUPS = (("Conv_0/kernel",), ("Conv_1/kernel", "skip/kernel"), ("Dense_0/kernel", "Dense_1/kernel"))


def test_a_users_own_network_gets_widths_from_its_masks():
    build = lambda widths: SmallNet(tuple(widths))  # noqa: E731
    params = jax.jit(build((32, 64, 128)).init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    dense = masks.init(params)
    previous = None
    for rounds in (2, 4, 7):
        m = masks.prune_global(params, dense, 1 - 0.8**rounds)
        widths = students.chain_widths(build, SMALL_NET_GROUPS, m, image_shape=(16, 16, 3), name="SmallNet")
        count = sum(math.prod(shape) for shape in students.kernel_shapes(build(widths), (16, 16, 3)).values())
        assert abs(count / masks.remaining(m) - 1) < 0.02, (rounds, widths, count, masks.remaining(m))
        assert previous is None or widths < previous or sum(widths) < sum(previous)
        previous = widths
    # Masks of another network are refused, naming the kernel.
    other = masks.init(jax.jit(SmallNet((16, 32, 48)).init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"])
    other["extra"] = {"kernel": jnp.ones((3, 3), bool)}
    with pytest.raises(masks.MaskError, match="masks do not belong to SmallNet: unexpected extra/kernel"):
        students.chain_widths(build, SMALL_NET_GROUPS, other, image_shape=(16, 16, 3), name="SmallNet")
