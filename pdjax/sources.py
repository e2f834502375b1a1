"""Reading each kind of data source into uint8 arrays: scikit-learn's bundled digits, a
tensorflow-datasets data set, an image folder or zip (class folders, or the Tiny-ImageNet-200
layout). `pdjax.data.load` chooses the reader, then subsets, splits and normalises.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import importlib.util
import io
import os
import socket
import threading
import zipfile
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")

class DataError(ValueError):
    """A data source that cannot be read; the message names the problem in one line."""


@dataclasses.dataclass(frozen=True)
class Split:
    """Images (uint8, NHWC) and their integer labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def subset_indices(n: int, limit: int | None, rng: np.random.Generator) -> np.ndarray | None:
    """Sorted indices of a seeded random subset of `limit` out of `n`; None keeps all."""
    if limit is None or limit >= n:
        return None
    return np.sort(rng.permutation(n)[:limit])


# ----------------------------------------------------------------------------- synthetic

# The paper's data sets by shape: (image shape, classes, training images, test images). A
# `synthetic:NAME` source has that shape and class count and random pixels: what a dry run
# (`--dry-run`) trains on, without the data.
PAPER_SHAPES = {
    "cifar10": ((32, 32, 3), 10, 50_000, 10_000),
    "cifar100": ((32, 32, 3), 100, 50_000, 10_000),
    "tiny_imagenet": ((64, 64, 3), 200, 100_000, 10_000),
}


def paper_shape(source: str) -> str | None:
    """Which of `PAPER_SHAPES` a data source is (by its name: 'cifar100', 'cifar10', a path
    naming Tiny-ImageNet), or None."""
    name = source.lower().replace("-", "_")
    if "tiny" in name:
        return "tiny_imagenet"
    if "cifar100" in name:
        return "cifar100"
    if "cifar10" in name:
        return "cifar10"
    return None


def load_synthetic(name: str, train: int, test: int) -> tuple[Split, Split, list[str]]:
    """Random uint8 images of a paper data set's shape and its class count (labels cycling
    through the classes), `train` and `test` of them, the same on every call."""
    if name not in PAPER_SHAPES:
        raise DataError(f"synthetic:{name}: use one of {', '.join(PAPER_SHAPES)}")
    shape, classes, _, _ = PAPER_SHAPES[name]
    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        return Split(rng.integers(0, 256, (n, *shape), dtype=np.uint8), (np.arange(n) % classes).astype(np.int64))

    return split(train), split(test), [f"class_{i}" for i in range(classes)]


# ----------------------------------------------------------------------------- digits


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as (8x8 float64 images 0..16, int labels). Read straight from
    the file scikit-learn ships (what `load_digits` reads), which spares every process importing
    scikit-learn (~1.2 s of CPU at every start); `load_digits` where that file is
    not where scikit-learn 1.x keeps it."""
    spec = importlib.util.find_spec("sklearn")
    bundled = (Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
               if spec is not None and spec.origin else None)
    if bundled is not None and bundled.is_file():
        with gzip.open(bundled, "rt", encoding="utf-8") as f:
            table = np.loadtxt(f, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def load_digits() -> tuple[Split, Split, list[str]]:
    digit_images, targets = _digits_arrays()
    # 8x8 images with values 0..16 -> 32x32x3 uint8 by 4x nearest-neighbour upsampling.
    images = np.kron(digit_images, np.ones((4, 4))) * (255.0 / 16.0)
    images = np.repeat(np.clip(np.round(images), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    labels = targets.astype(np.int32)
    # A fixed test split: every fifth image (360 of 1797).
    is_test = np.arange(len(labels)) % 5 == 0
    return (Split(images[~is_test], labels[~is_test]), Split(images[is_test], labels[is_test]),
            [str(d) for d in range(10)])


# ----------------------------------------------------------------------------- tfds


def _network_reachable(hosts: Sequence[str] = ("storage.googleapis.com", "www.cs.toronto.edu"),
                       timeout: float = 3.0) -> bool:
    """Whether any host answers on port 443, in at most about `timeout` per host: the probe runs
    in a daemon thread, because resolving a name (getaddrinfo) is not bounded by the socket's
    timeout and a machine with a hanging resolver would otherwise wait for minutes."""
    answered: list[bool] = []

    def probe() -> None:
        for host in hosts:
            try:
                with socket.create_connection((host, 443), timeout=timeout):
                    answered.append(True)
                    return
            except Exception:  # noqa: BLE001 - a probe reports "no", it never raises in its thread
                continue

    thread = threading.Thread(target=probe, daemon=True, name="pdjax-network-probe")
    thread.start()
    thread.join(timeout * len(hosts) + 0.5)
    return bool(answered)


def load_tfds(name: str, *, data_dir: str | None, download: bool) -> tuple[Split, Split, list[str]]:
    import tensorflow_datasets as tfds

    if not name:
        raise DataError("tfds source needs a data set name, e.g. tfds:cifar100")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # tfds raises DatasetNotFoundError and friends
        raise DataError(f"tfds has no data set {name!r}: {str(err).splitlines()[0]}") from None

    def sources() -> dict:
        return {s: tfds.data_source(name, split=s, data_dir=data_dir, download=False)
                for s in ("train", "test")}

    try:
        split_sources = sources()
    except Exception as first_error:
        if builder.is_prepared():
            raise DataError(f"tfds data set {name!r} is prepared in {builder.data_dir} in a format "
                            f"pdjax cannot read without TensorFlow ({str(first_error).splitlines()[0]}); "
                            "prepare it with file_format='array_record'") from None
        if not download:
            raise DataError(f"tfds data set {name!r} is not prepared in {builder.data_dir} "
                            "and download is off") from None
        if not _network_reachable():
            raise DataError(f"tfds data set {name!r} is not prepared in {builder.data_dir} and cannot "
                            "be downloaded (no network); prepare it on a machine with network and copy "
                            "the directory, or use folder:PATH") from None
        try:
            builder.download_and_prepare(file_format="array_record")
        except ModuleNotFoundError as err:
            raise DataError(f"preparing tfds data set {name!r} needs {err.name}: "
                            "pip install 'pdjax[tensorflow]'") from None
        split_sources = sources()
    out = []
    for split in ("train", "test"):
        source = split_sources[split]
        examples = [source[i] for i in range(len(source))]
        images = np.stack([np.asarray(e["image"], np.uint8) for e in examples])
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        out.append(Split(images, np.asarray([e["label"] for e in examples], np.int32)))
    label = builder.info.features["label"]
    return out[0], out[1], list(label.names)


# ----------------------------------------------------------------------------- folders


class _Files:
    """Read-only view of a directory or a zip archive, paths as POSIX strings."""

    def __init__(self, path: str):
        self.path = path
        p = Path(path)
        if not p.exists():
            raise DataError(f"data path {path} does not exist")
        self._zip: zipfile.ZipFile | None = None
        if p.is_dir():
            self.names = sorted(str(f.relative_to(p).as_posix()) for f in p.rglob("*") if f.is_file())
            self._root = p
        elif zipfile.is_zipfile(p):
            self._zip = zipfile.ZipFile(p)
            self.names = sorted(n for n in self._zip.namelist() if not n.endswith("/"))
        else:
            raise DataError(f"data path {path} is neither a directory nor a .zip archive")
        self.dirs = {str(PurePosixPath(n).parent) for n in self.names}
        if self._zip is not None:  # explicit directory entries, empty folders included
            self.dirs |= {n.rstrip("/") for n in self._zip.namelist() if n.endswith("/")}
        else:
            self.dirs |= {str(d.relative_to(p).as_posix()) for d in p.rglob("*") if d.is_dir()}

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self._root / name).read_bytes()


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _find_root(files: _Files) -> str:
    """'' or the single top-level folder that holds train/ (a zip of a folder)."""
    tops = {n.split("/", 1)[0] for n in files.names if "/" in n}
    if "train" in tops:
        return ""
    if len(tops) == 1:
        return tops.pop() + "/"
    return ""


def load_folder(path: str, *, max_train: int | None, max_test: int | None,
                 rng: np.random.Generator) -> tuple[Split, Split, list[str], str | None]:
    """(train, test, classes, "tiny_imagenet" for that layout else None) of a folder or zip."""
    files = _Files(path)
    root = _find_root(files)
    layout = None
    if f"{root}val/val_annotations.txt" in files.names:
        train_items, test_items, classes = _tiny_imagenet_items(files, root)
        layout = "tiny_imagenet"
    else:
        train_items, classes = _class_folder_items(files, root, "train", None)
        test_items, _ = _class_folder_items(files, root, "test", classes)
    # Subsets are drawn before decoding, so a slice of a large archive decodes fast.
    train_items = _subset_items(train_items, max_train, rng)
    test_items = _subset_items(test_items, max_test, rng)
    return _decode(files, train_items), _decode(files, test_items), classes, layout


def _subset_items(items: list[tuple[str, int]], limit: int | None,
                  rng: np.random.Generator) -> list[tuple[str, int]]:
    keep = subset_indices(len(items), limit, rng)
    return items if keep is None else [items[i] for i in keep]


def _class_folder_items(files: _Files, root: str, split: str,
                        classes: list[str] | None) -> tuple[list[tuple[str, int]], list[str]]:
    prefix = f"{root}{split}/"
    found = sorted({d[len(prefix):].split("/")[0] for d in files.dirs if d.startswith(prefix)}
                   | {n[len(prefix):].split("/")[0] for n in files.names
                      if n.startswith(prefix) and "/" in n[len(prefix):]})
    if not found:
        raise DataError(f"{files.path} has no {split}/<class>/ folders "
                        "(expected train/<class>/* and test/<class>/*)")
    if classes is not None and found != classes:
        extra = sorted(set(found) ^ set(classes))
        raise DataError(f"{files.path}: test classes differ from train classes ({', '.join(extra[:5])})")
    by_class: dict[str, list[str]] = {c: [] for c in found}
    for n in files.names:
        if n.startswith(prefix) and _is_image(n):
            cls = n[len(prefix):].split("/")[0]
            if cls in by_class:
                by_class[cls].append(n)
    for cls, names in by_class.items():
        if not names:
            raise DataError(f"{files.path}: class folder {prefix}{cls}/ holds no images")
    items = [(n, i) for i, c in enumerate(found) for n in by_class[c]]
    return items, found


def _tiny_imagenet_items(files: _Files, root: str) -> tuple[list, list, list[str]]:
    train_items, classes = _class_folder_items(files, root, "train", None)
    index = {c: i for i, c in enumerate(classes)}
    test_items = []
    for line in files.read(f"{root}val/val_annotations.txt").decode().splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(f"{files.path}: bad line in val/val_annotations.txt: {line[:80]!r}")
        test_items.append((f"{root}val/images/{fields[0]}", index[fields[1]]))
    return train_items, test_items, classes


def _decode_one(files: _Files, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(files.read(name))) as img:
            return np.asarray(img.convert("RGB"), np.uint8)
    except Exception as err:
        raise DataError(f"cannot read image {name} in {files.path}: {err}") from None


def _decode(files: _Files, items: list[tuple[str, int]]) -> Split:
    names = [n for n, _ in items]
    if files._zip is not None:
        # ZipFile reads are not thread-safe on one handle: decode in order.
        images = [_decode_one(files, n) for n in names]
    else:
        with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            images = list(pool.map(lambda n: _decode_one(files, n), names))
    shapes = {}
    for n, img in zip(names, images):
        shapes.setdefault(img.shape, n)
    if len(shapes) > 1:
        (s1, n1), (s2, n2) = list(shapes.items())[:2]
        raise DataError(f"images of mixed sizes in {files.path}: {n1} is {s1[1]}x{s1[0]}, "
                        f"{n2} is {s2[1]}x{s2[0]}")
    return Split(np.stack(images), np.asarray([label for _, label in items], np.int32))
