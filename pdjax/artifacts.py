"""The trained model as a product: any stage back in one call, and exported for serving.

Every `pdjax.train.fit` with a work directory writes `model.json` there when it starts (the
module's class and settings, the image shape, the classes, the normalisation) and, when it
finishes, `result.json`, `best_variables` and, for a masked (pruned) model, `masks`. So any
stage of any experiment (teacher, pruning round, scratch or KD student) comes back without
knowing how it was built:

    stage = pdjax.artifacts.load_stage("runs/pruning_controls/demo/teacher_seed0/magnitude/round_02")
    logits = stage.module.apply(stage.variables, stage.normalize(images), train=False)
    stage.record["test_accuracy"], stage.masks

`export(stage_dir, out)` writes the evaluation forward pass as a serialized `jax.export`
artifact (StableHLO, lowered for CPU, CUDA and TPU) that takes uint8 NHWC images of any batch
size and returns logits, the normalisation inside it and a pruned model's zeros folded into its
weights, plus `out/model.json` (classes, image shape, normalisation, source stage, pdjax
version). Running it needs `jax` and `numpy` only:

    exported = jax.export.deserialize(open("out/model.jax", "rb").read())
    logits = exported.call(images_uint8)

`python -m pdjax.export STAGE_DIR OUT` does the same from a shell.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from pdjax import checkpoints, masks as masks_lib, models, provenance
from pdjax.files import write_atomic, write_json_atomic
from pdjax.types import Array, Masks, Variables

FORMAT = 1  # of model.json; a stage written with another format is refused
MODEL_FILE = "model.json"
EXPORT_FILE = "model.jax"


class StageError(ValueError):
    """A directory that is not a finished stage pdjax can load."""


def pdjax_version() -> str:
    try:
        return importlib.metadata.version("pdjax")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without installing
        return "unknown"


def describe(model: nn.Module, data: Any, masked: bool) -> dict[str, Any]:
    """What `model.json` holds for a stage of `model` trained on `data` (a `pdjax.data.ImageData`)."""
    return {"format": FORMAT, "pdjax_version": pdjax_version(), "model": provenance.describe_module(model),
            "image_shape": list(data.image_shape), "classes": list(data.classes),
            "normalization": {"source": data.normalization, "mean": list(data.mean), "std": list(data.std)},
            "masked": masked}


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def module_from_record(record: Mapping[str, Any]) -> nn.Module:
    """Rebuilds a pdjax model from `provenance.describe_module`'s description of it.

    Initialisers are left at the class's defaults (they only matter for a fresh initialisation,
    not for trained variables); a ResNet's block is found by its class name.

    Raises:
      StageError: the class is not a pdjax model.
    """
    cls = getattr(models, str(record.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise StageError(f"model class {record.get('class')!r} is not a pdjax model")
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in record or field.name in ("parent", "name"):
            continue
        value = record[field.name]
        if field.name == "block":
            value = getattr(models, value)
        elif field.name == "dtype":
            value = None if value is None else jnp.dtype(value)
        elif isinstance(value, str) and ("<locals>" in value or field.name.endswith("_init")):
            continue  # an initialiser: the default
        kwargs[field.name] = _tuples(value)
    return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class Stage:
    """A finished stage, loaded: its module, best variables, masks and records.

    Attributes:
      path: the stage directory.
      module: the Flax module, rebuilt from `model.json`.
      variables: its best variables (the last epoch's for a pruning round); a pruned model's
        pruned weights are exactly zero in them.
      masks: its masks, or None for a dense model.
      record: `result.json` (test accuracy, best epoch, ...) with `model.json` under "model".
    """

    path: Path
    module: nn.Module
    variables: Variables
    masks: Masks | None
    record: Mapping[str, Any]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.record["model"]["image_shape"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.record["model"]["classes"])

    def normalize(self, images: Any) -> Array:
        """uint8 NHWC images -> the float32 inputs this model was trained on."""
        norm = self.record["model"]["normalization"]
        x = jnp.asarray(images).astype(jnp.float32) / 255.0
        return (x - jnp.asarray(norm["mean"], jnp.float32)) / jnp.asarray(norm["std"], jnp.float32)

    def forward(self) -> Callable[[Any], Array]:
        """uint8 NHWC images -> logits, evaluation mode, masks folded into the weights."""
        variables = masks_lib.apply_to_variables(self.variables, self.masks)
        return lambda images: self.module.apply(variables, self.normalize(images), train=False)


def load_stage(path: str | Path) -> Stage:
    """Loads a finished stage directory of any experiment (see the module docstring).

    Raises:
      StageError: `path` is not a finished stage (no `result.json`: still training, or not a
        stage at all), predates `model.json` (run the same command again to write it), or was
        written by an incompatible pdjax; one line saying which and what to do.
    """
    path = Path(path)
    if not path.is_dir():
        raise StageError(f"{path} is not a directory")
    if not (path / "stage.json").exists():
        raise StageError(f"{path} is not a training stage (no stage.json): give a stage directory such as "
                         "teacher/, pruning/round_02/ or student_scratch/")
    if not (path / "result.json").exists() or not (path / "best_variables").exists():
        raise StageError(f"{path} is a stage that has not finished (no result.json): run its command to the end")
    if not (path / MODEL_FILE).exists():
        raise StageError(f"{path} was trained by a pdjax without {MODEL_FILE}: run the same command again "
                         "(it trains nothing more and writes the file)")
    described = json.loads((path / MODEL_FILE).read_text())
    if described.get("format") != FORMAT:
        raise StageError(f"{path} was written by pdjax {described.get('pdjax_version')} (model.json format "
                         f"{described.get('format')}); this pdjax reads format {FORMAT}: load it with that version")
    module = module_from_record(described["model"])
    template = models.init(module, jax.random.key(0), described["image_shape"])
    variables = checkpoints.load_tree(path / "best_variables", template)
    masks = None
    if described.get("masked"):
        masks = checkpoints.load_tree(path / "masks", masks_lib.init(template["params"]))
    record = {**json.loads((path / "result.json").read_text()), "model": described}
    return Stage(path, module, jax.device_get(variables), None if masks is None else jax.device_get(masks), record)


def export(stage: str | Path | Stage, out: str | Path, *,
           platforms: tuple[str, ...] = ("cpu", "cuda", "tpu")) -> Path:
    """Writes `out/model.jax` (the serialized `jax.export` of the stage's evaluation forward pass
    on uint8 NHWC images, batch size symbolic) and `out/model.json` (classes, image shape,
    normalisation, source stage, pdjax version, platforms). Returns `out`."""
    stage = stage if isinstance(stage, Stage) else load_stage(stage)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    forward = jax.jit(stage.forward())
    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *stage.image_shape), jnp.uint8)
    exported = jax.export.export(forward, platforms=platforms)(spec)
    write_atomic(out / EXPORT_FILE, lambda tmp: tmp.write_bytes(exported.serialize()))
    described = stage.record["model"]
    write_json_atomic(out / MODEL_FILE, {
        "format": FORMAT, "file": EXPORT_FILE, "input": {"dtype": "uint8", "layout": "NHWC",
                                                          "shape": ["batch", *stage.image_shape]},
        "output": {"dtype": "float32", "shape": ["batch", len(stage.classes)], "what": "logits"},
        "classes": list(stage.classes), "normalization": described["normalization"],
        "platforms": list(platforms), "source_stage": str(stage.path),
        "test_accuracy": stage.record.get("test_accuracy"), "pdjax_version": pdjax_version()})
    return out


ONNX_FILE = "model.onnx"


def export_onnx(stage: str | Path | Stage, out: str | Path) -> Path:
    """Writes `out/model.onnx`: the same function as `export` (uint8 NHWC images of any batch
    size -> logits, normalisation inside, masks folded) converted by jax2onnx, for onnxruntime
    and other ONNX runtimes. Needs the `onnx` extra (`pip install -e '.[onnx]'`). Every pdjax
    model converts (VGGs, VGG16-tiny, ResNets, MobileNetV2: checked against `model.apply` in
    the tests). Returns the file's path.

    Raises:
      ImportError: jax2onnx is not installed.
    """
    try:
        from jax2onnx import to_onnx
    except ImportError as err:
        raise ImportError("ONNX export needs jax2onnx: pip install -e '.[onnx]'") from err
    stage = stage if isinstance(stage, Stage) else load_stage(stage)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (batch,) = jax.export.symbolic_shape("batch")
    model = to_onnx(stage.forward(), [jax.ShapeDtypeStruct((batch, *stage.image_shape), jnp.uint8)],
                    model_name=stage.path.name or "pdjax")
    write_atomic(out / ONNX_FILE, lambda tmp: tmp.write_bytes(model.SerializeToString()))
    return out / ONNX_FILE


def logits(stage: Stage, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """The stage's logits on uint8 images, in batches (one compiled forward pass)."""
    norm = stage.record["model"]["normalization"]
    return predict(stage.module, stage.variables, stage.masks, images, mean=norm["mean"], std=norm["std"],
                   batch_size=batch_size)


def predict(module: nn.Module, variables: Variables, masks: Masks | None, images: np.ndarray, *, mean: Any,
            std: Any, batch_size: int = 500) -> np.ndarray:
    """A model's logits on uint8 NHWC images normalised by `mean` and `std` (pixel units in
    [0, 1], as `pdjax.data.ImageData` holds them), masks applied, evaluation mode, in batches."""
    # The variables are arguments, not constants of the program (as in `Stage.forward`, made for
    # export): XLA does not compile the weights into it, and the program depends only on the
    # architecture (and batch shape), so the compilation cache reads it back for other stages.
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def forward(variables: Variables, masks: Masks | None, images: Array) -> Array:
        x = images.astype(jnp.float32) / 255.0
        x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
        return module.apply(masks_lib.apply_to_variables(variables, masks), x, train=False)

    jitted = jax.jit(forward)
    return np.concatenate([np.asarray(jitted(variables, masks, images[i:i + batch_size]))
                           for i in range(0, len(images), batch_size)])
