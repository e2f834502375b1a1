"""Image data sets as uint8 arrays, and augmentation that runs inside the jitted step.

A data set is named by one string:
  - `digits`: scikit-learn's bundled 8x8 digits brought to 32x32x3 (the embedded default; it
    needs no file and no network).
  - `tfds:NAME` (`tfds:cifar10`, `tfds:cifar100`, ...): a tensorflow-datasets data set, read
    with `tfds.data_source`. `data_dir` picks where tfds keeps it.
  - `synthetic:NAME[:TRAIN]`: random images of a paper data set's shape and class count
    (`cifar10`, `cifar100`, `tiny_imagenet`; TRAIN images, default 300): what `--dry-run` trains on.
  - `folder:PATH`: PATH is a directory or a .zip holding `train/<class>/*` and `test/<class>/*`
    images, or the Tiny-ImageNet-200 layout (`train/<wnid>/images/*`, `val/images/*` with
    `val/val_annotations.txt`; its labelled `val` split serves as the test split). That
    layout is recognised whatever the file is called.

Normalization: PAPER.md's per-channel constants for CIFAR-10, CIFAR-100 and Tiny-ImageNet (by
tfds name, folder name, or the Tiny-ImageNet layout), else the training split's own statistics;
`ImageData.normalization` says which.

Usage:
    data = pdjax.data.load("folder:../shared/datasets/cifar10-jpeg.zip", max_train=5000)
    data.train.images.shape   # (4500, 32, 32, 3) uint8; 10% held out as data.val
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pdjax import sources
# The error every loader raises and a split are defined with the readers (`pdjax.sources`) and
# are this module's API too.
from pdjax.sources import DataError, Split, subset_indices
from pdjax.types import Array, PRNGKey

# Per-channel normalization constants of PAPER.md (in [0, 1] pixel units).
NORMALIZATION = {
    "cifar10": ((0.491, 0.482, 0.447), (0.247, 0.243, 0.262)),
    "cifar100": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
    "tiny_imagenet": ((0.480, 0.448, 0.397), (0.276, 0.269, 0.282)),
}


@dataclasses.dataclass(frozen=True)
class ImageData:
    """A data set held in memory: train, validation (held out from train) and test splits."""

    name: str
    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # Where `mean` and `std` come from: a PAPER.md set ("cifar10", "cifar100", "tiny_imagenet")
    # or "computed from the training split".
    normalization: str = "computed from the training split"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


def digest(data: ImageData) -> dict[str, Any]:
    """A cheap fingerprint of a data set: its classes, and per split the image shape, the number
    of images and a hash of the image and label bytes (a fraction of a second for CIFAR)."""
    out: dict[str, Any] = {"name": data.name, "classes": len(data.classes),
                           "class_names": hashlib.sha256("\n".join(data.classes).encode()).hexdigest()[:16]}
    for split in ("train", "val", "test"):
        s = getattr(data, split)
        h = hashlib.sha256(np.ascontiguousarray(s.images).tobytes())
        h.update(np.ascontiguousarray(s.labels).astype(np.int64).tobytes())
        out[split] = {"images": len(s), "shape": list(s.images.shape[1:]), "sha256": h.hexdigest()[:16]}
    return out


def digest_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two `digest`s, e.g. "train: 18000 -> 17990 images"."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            if a.get("images") != b.get("images"):
                out.append(f"{key}: {a.get('images')} -> {b.get('images')} images")
            elif a.get("shape") != b.get("shape"):
                out.append(f"{key}: image shape {a.get('shape')} -> {b.get('shape')}")
            else:
                out.append(f"{key}: same size, different images or labels")
        else:
            out.append(f"{key}: {a} -> {b}")
    return out


# ----------------------------------------------------------------------------- loading


def check_source(source: str) -> None:
    """Refuses a source that cannot be loaded, before anything is read: an unknown kind, a tfds
    source without a name, a folder path that does not exist.

    Raises:
      DataError: saying which.
    """
    kind, _, rest = source.partition(":")
    if source != "digits" and kind not in ("tfds", "folder", "synthetic"):
        raise DataError(f"unknown data source {source!r}: use 'digits', 'tfds:NAME' or 'folder:PATH'")
    if kind == "synthetic" and rest.split(":")[0] not in sources.PAPER_SHAPES:
        raise DataError(f"synthetic source {source!r}: use synthetic:NAME[:TRAIN] with NAME one of "
                        f"{', '.join(sources.PAPER_SHAPES)}")
    if kind == "tfds" and not rest:
        raise DataError("tfds source needs a data set name, e.g. tfds:cifar100")
    if kind == "folder" and not Path(rest).exists():
        raise DataError(f"data path {rest} does not exist")


def load(
    source: str,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> ImageData:
    """Loads a data set into memory.

    Args:
      source: `digits`, `tfds:NAME` or `folder:PATH` (see the module docstring).
      val_fraction: share of the training set held out for validation (fixed by `split_seed`).
      split_seed: seed of the validation hold-out and of the `max_*` subsets.
      max_train: keep at most this many training images (a seeded random subset), before the
        validation hold-out; for CPU-sized runs.
      max_test: keep at most this many test images (a seeded random subset).
      data_dir: where tensorflow-datasets keeps its data (tfds sources only).
      download: whether a tfds data set that is not prepared may be downloaded.

    Returns:
      An `ImageData`.

    Raises:
      DataError: the source is unknown, missing, malformed or cannot be had offline.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    check_source(source)
    rng = np.random.default_rng(split_seed)
    if source == "digits":
        name, (train, test, classes) = "digits", sources.load_digits()
    elif source.startswith("tfds:"):
        name = source[len("tfds:"):]
        train, test, classes = sources.load_tfds(name, data_dir=data_dir, download=download)
    elif source.startswith("synthetic:"):
        # synthetic:NAME[:TRAIN]: random images of a paper data set's shape (dry runs).
        name, _, count = source[len("synthetic:"):].partition(":")
        train, test, classes = sources.load_synthetic(name, int(count) if count else 300, 100)
    elif source.startswith("folder:"):
        path = source[len("folder:"):]
        train, test, classes, layout = sources.load_folder(path, max_train=max_train, max_test=max_test, rng=rng)
        # Tiny-ImageNet is recognised by its layout, whatever the file is called.
        name = layout or Path(path).stem
    else:  # checked above
        raise AssertionError(source)
    train = _subset(train, max_train, rng)
    test = _subset(test, max_test, rng)
    _check_split(train, "train", len(classes))
    _check_split(test, "test", len(classes))
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(f"train images are {train.images.shape[1:]} but test images are "
                        f"{test.images.shape[1:]} in {source}")
    order = rng.permutation(len(train))
    n_val = int(round(val_fraction * len(train)))
    val = Split(train.images[order[:n_val]], train.labels[order[:n_val]])
    train = Split(train.images[order[n_val:]], train.labels[order[n_val:]])
    mean, std, normalization = _normalization(name, train.images)
    return ImageData(name, train, val, test, tuple(classes), mean, std, normalization)


def train_subset(data: ImageData, size: int | None, seed: int = 0) -> ImageData:
    """The same data with its training split cut to `size` images, each class keeping its share.

    For students trained on fewer labelled images than their teacher (distillation's gain grows
    as labels get scarcer): the validation and test splits and the normalization constants stay
    those of `data`, so a teacher trained on `data` sees its inputs normalised as it was trained.
    The subset is fixed by `seed` alone: every student given the same (data, size, seed) trains
    on the same images. Each class keeps floor(size * its share) images, and the images left over
    go to the classes with the largest remainders (ties to the lower class index).

    Args:
      data: the full data set.
      size: how many training images to keep; None, or at least the split's size, keeps all.
      seed: which images each class keeps.

    Raises:
      DataError: `size` is below the number of classes, or below 1.
    """
    n = len(data.train)
    if size is None or size >= n:
        return data
    if size < max(1, data.num_classes):
        raise DataError(f"a training subset of {size} images cannot hold one image of each of "
                        f"{data.num_classes} classes")
    labels = np.asarray(data.train.labels)
    counts = np.bincount(labels, minlength=data.num_classes)
    exact = size * counts / n
    quota = np.floor(exact).astype(np.int64)
    left = size - int(quota.sum())
    by_remainder = sorted(range(data.num_classes), key=lambda c: (-(exact[c] - quota[c]), c))
    quota[by_remainder[:left]] += 1
    order = np.random.default_rng(seed).permutation(n)
    keep = np.sort(np.concatenate([order[labels[order] == c][:quota[c]] for c in range(data.num_classes)]))
    return dataclasses.replace(data, train=Split(data.train.images[keep], data.train.labels[keep]))


def _subset(split: Split, limit: int | None, rng: np.random.Generator) -> Split:
    keep = subset_indices(len(split), limit, rng)
    return split if keep is None else Split(split.images[keep], split.labels[keep])


def _check_split(split: Split, which: str, num_classes: int) -> None:
    if len(split) == 0:
        raise DataError(f"the {which} split has no images")
    if split.images.dtype != np.uint8 or split.images.ndim != 4 or split.images.shape[-1] != 3:
        raise DataError(f"the {which} split must be uint8 images of shape (N, H, W, 3), "
                        f"got {split.images.dtype} {split.images.shape}")
    if split.labels.min() < 0 or split.labels.max() >= num_classes:
        raise DataError(f"the {which} split has labels outside [0, {num_classes})")


def _normalization(name: str, train_images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """(mean, std, where they come from) of a data set."""
    key = name.replace("-", "_").lower()
    if key in NORMALIZATION:
        return (*NORMALIZATION[key], key)
    # Any other data set: per-channel statistics of its own training images.
    pixels = train_images.reshape(-1, train_images.shape[-1]).astype(np.float64) / 255.0
    std = np.maximum(pixels.std(axis=0), 1e-3)
    return (tuple(float(v) for v in pixels.mean(axis=0)), tuple(float(v) for v in std),
            "computed from the training split")


# ----------------------------------------------------------------------------- on device


def normalize(images: Array, mean: Sequence[float], std: Sequence[float]) -> Array:
    """uint8 images -> float32, per-channel normalized."""
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def random_crop_flip(images: Array, key: PRNGKey, padding: int = 4, flip: bool = True) -> Array:
    """Random crop with zero padding and random horizontal flip, per image, on the device."""
    n, h, w, c = images.shape
    crop_key, flip_key = jax.random.split(key)
    if padding:
        padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * padding + 1)
        images = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c)))(
            padded, offsets)
    if flip:
        flips = jax.random.bernoulli(flip_key, 0.5, (n,))
        images = jnp.where(flips[:, None, None, None], images[:, :, ::-1], images)
    return images


# ----------------------------------------------------------------------------- batches


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of one epoch: a permutation fixed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def epoch_batches(num_examples: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """One epoch's batches as an index matrix (batches, batch_size): consecutive slices of
    `epoch_order`, each sorted, the last incomplete batch dropped. `train_batches` takes its
    batches from it on the host, `pdjax.feed` on the devices."""
    order = epoch_order(num_examples, seed, epoch)
    n = num_examples // batch_size
    return np.sort(order[: n * batch_size].reshape(n, batch_size), axis=1).astype(np.int32)


def train_batches(split: Split, batch_size: int, seed: int, epoch: int,
                  start_batch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shuffled full batches of one epoch (`epoch_batches`), from batch `start_batch` on (a
    resumed epoch skips what it already did)."""
    for idx in epoch_batches(len(split), batch_size, seed, epoch)[start_batch:]:
        yield split.images[idx], split.labels[idx]


def eval_batches(split: Split, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Batches in order, the last one padded to `batch_size`; yields (images, labels, weights)."""
    for start in range(0, len(split), batch_size):
        images = split.images[start : start + batch_size]
        labels = split.labels[start : start + batch_size]
        weights = np.ones(len(labels), np.float32)
        pad = batch_size - len(labels)
        if pad:
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
            weights = np.concatenate([weights, np.zeros(pad, np.float32)])
        yield images, labels, weights
