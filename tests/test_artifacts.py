"""Any finished stage back in one call, and exported to a process that never imports pdjax."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from pdjax import artifacts, distill, masks, models, pruning, steps, train

SCHEDULE = steps.Schedule(epochs=1, batch_size=64, lr=0.05, weight_decay=5e-4)
# One worker runs the whole module: its tests share the `stages` fixture (~25 s), which each
# worker would otherwise train for itself; started early (conftest.py).
pytestmark = [pytest.mark.xdist_group("artifact_stages"), pytest.mark.slow(60)]


@pytest.fixture(scope="module")
def stages(small_digits, tiny_vgg11, tmp_path_factory):
    """A teacher, one pruning round of it and a KD student of the round, each a stage directory."""
    out = tmp_path_factory.mktemp("stages")
    teacher = train.fit(tiny_vgg11, small_digits, SCHEDULE, workdir=out / "teacher", seed=0, progress=False)
    rounds = pruning.iterative_pruning(tiny_vgg11, small_digits, pruning.PruneSpec(SCHEDULE, rounds=1),
                                       variables=teacher.best_variables, workdir=out / "pruning", progress=False)
    student = models.get("vgg11", 10, widths=(2,) * 8)
    train.fit(student, small_digits, SCHEDULE, workdir=out / "student", seed=1, progress=False,
              teacher=distill.Teacher(tiny_vgg11, rounds[0].variables, rounds[0].masks))
    return out, {"teacher": out / "teacher", "round": out / "pruning" / "round_01", "student": out / "student"}


def test_every_stage_loads_and_gives_its_recorded_test_accuracy(stages, small_digits, tiny_vgg11):
    _, dirs = stages
    for name, path in dirs.items():
        stage = artifacts.load_stage(path)
        logits = artifacts.logits(stage, small_digits.test.images)
        accuracy = float(np.mean(np.argmax(logits, -1) == small_digits.test.labels))
        saved = json.loads((path / "result.json").read_text())["test_accuracy"]
        assert accuracy == pytest.approx(saved, abs=1e-6), name
        assert stage.classes == small_digits.classes and stage.image_shape == (32, 32, 3)
    round_stage = artifacts.load_stage(dirs["round"])
    assert round_stage.module == tiny_vgg11
    assert round_stage.masks is not None and 0 < masks.density(round_stage.masks) < 1
    # pruned weights are exactly zero in the loaded variables
    kernel, mask = round_stage.variables["params"]["Conv_1"]["kernel"], round_stage.masks["Conv_1"]["kernel"]
    assert np.all(np.asarray(kernel)[~np.asarray(mask)] == 0)
    assert artifacts.load_stage(dirs["student"]).masks is None


def test_what_is_not_a_finished_stage_is_refused_with_what_to_do(stages, tmp_path):
    out, dirs = stages
    with pytest.raises(artifacts.StageError, match="not a training stage .no stage.json."):
        artifacts.load_stage(out / "pruning")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(dirs["teacher"], unfinished)
    (unfinished / "result.json").unlink()
    with pytest.raises(artifacts.StageError, match="has not finished .no result.json.: run its command to the end"):
        artifacts.load_stage(unfinished)
    old = tmp_path / "old"
    shutil.copytree(dirs["teacher"], old)
    (old / "model.json").unlink()
    with pytest.raises(artifacts.StageError, match="without model.json: run the same command again"):
        artifacts.load_stage(old)
    other = tmp_path / "other"
    shutil.copytree(dirs["teacher"], other)
    described = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**described, "format": 99}))
    with pytest.raises(artifacts.StageError, match="format 99.*reads format 1"):
        artifacts.load_stage(other)
    with pytest.raises(artifacts.StageError, match="is not a directory"):
        artifacts.load_stage(tmp_path / "nowhere")


LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jax
    exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
    images = np.load(sys.argv[2])
    logits = np.concatenate([np.asarray(exported.call(images[i:i + 100])) for i in range(0, len(images), 100)])
    np.save(sys.argv[3], logits)
    print(json.dumps({"pdjax_imported": any(m.split(".")[0] == "pdjax" for m in sys.modules),
                      "platforms": list(exported.platforms)}))
""")


def test_exported_stage_runs_without_pdjax_and_matches_apply(stages, small_digits, tmp_path, test_env):
    _, dirs = stages
    images = small_digits.test.images
    np.save(tmp_path / "images.npy", images)
    for name in ("round", "student"):
        out = tmp_path / name
        done = subprocess.run([sys.executable, "-m", "pdjax.export", str(dirs[name]), str(out)],
                              capture_output=True, text=True, env={**os.environ, **test_env}, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        described = json.loads((out / "model.json").read_text())
        assert described["input"]["dtype"] == "uint8" and described["classes"] == list(small_digits.classes)
        # A fresh interpreter that never imports pdjax (-I: no user site, no PYTHONPATH).
        run = subprocess.run([sys.executable, "-I", "-c", LOADER, str(out / "model.jax"), str(tmp_path / "images.npy"),
                              str(tmp_path / f"{name}.npy")], capture_output=True, text=True, timeout=300,
                             env={**os.environ, **test_env})
        assert run.returncode == 0, run.stderr[-2000:]
        report = json.loads(run.stdout.strip().splitlines()[-1])
        assert report == {"pdjax_imported": False, "platforms": ["cpu", "cuda", "tpu"]}
        served = np.load(tmp_path / f"{name}.npy")
        stage = artifacts.load_stage(dirs[name])
        expected = artifacts.logits(stage, images)
        np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
        accuracy = float(np.mean(np.argmax(served, -1) == small_digits.test.labels))
        assert accuracy == pytest.approx(stage.record["test_accuracy"], abs=1e-6)
    refused = subprocess.run([sys.executable, "-m", "pdjax.export", str(tmp_path), str(tmp_path / "x")],
                             capture_output=True, text=True, env={**os.environ, **test_env}, timeout=300)
    assert refused.returncode == 2 and refused.stderr.strip().startswith("error:") and "no stage.json" in refused.stderr


def test_onnx_export_runs_in_onnxruntime_like_apply(stages, small_digits, tmp_path):
    import onnxruntime as ort  # the onnx extra, which the dev extra installs: README's test command runs this
    _, dirs = stages
    images = small_digits.test.images[:100]
    for name in ("round", "student"):
        stage = artifacts.load_stage(dirs[name])
        path = artifacts.export_onnx(stage, tmp_path / name)
        session = ort.InferenceSession(str(path))
        served = session.run(None, {session.get_inputs()[0].name: images})[0]
        np.testing.assert_allclose(served, artifacts.logits(stage, images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["vgg16_tiny", "resnet18", "mobilenetv2"])
def test_every_model_family_converts_to_onnx(name):
    import onnxruntime as ort  # the onnx extra, which the dev extra installs: README's test command runs this
    from jax2onnx import to_onnx
    import jax.numpy as jnp

    model = models.get(name, 10, widths=models.scaled_widths(name, 1 / 32))
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    forward = lambda images: model.apply(variables, images.astype(jnp.float32) / 255.0, train=False)  # noqa: E731
    onnx_model = to_onnx(forward, [jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.uint8)])
    session = ort.InferenceSession(onnx_model.SerializeToString())
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    served = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(served, np.asarray(jax.jit(forward)(images)), rtol=1e-5, atol=1e-5)  # jitted: one program
