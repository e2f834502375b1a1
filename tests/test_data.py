import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from pdjax import data, sources


def write_tree(root: Path, classes=("cat", "dog"), per_class=(6, 2), size=(8, 8), split_names=("train", "test")):
    rng = np.random.default_rng(0)
    for split, n in zip(split_names, per_class):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def zip_tree(root: Path, zip_path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, prefix + f.relative_to(root).as_posix())
    return zip_path


def test_digits_is_32x32_rgb_with_validation_holdout():
    d = data.load("digits")
    assert d.image_shape == (32, 32, 3) and d.num_classes == 10
    assert len(d.train) + len(d.val) == 1437 and len(d.test) == 360
    assert len(d.val) == round(0.1 * 1437)
    assert d.train.images.dtype == np.uint8
    # The hold-out is fixed by the split seed and disjoint from train.
    again = data.load("digits")
    np.testing.assert_array_equal(again.val.labels, d.val.labels)
    train_rows = {x.tobytes() for x in d.train.images}
    assert sum(x.tobytes() in train_rows for x in d.val.images) < len(d.val) // 4  # digits has duplicates


def test_digits_are_scikit_learns_without_importing_it(monkeypatch):
    from sklearn.datasets import load_digits

    reference = load_digits()
    images, labels = sources._digits_arrays()
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(labels, reference.target)
    # Where the file is not where scikit-learn 1.x keeps it: scikit-learn's own loader.
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    images, labels = sources._digits_arrays()
    np.testing.assert_array_equal(images, reference.images)
    # A process that loads the digits does not import scikit-learn.
    code = "import sys; from pdjax import data; data.load('digits'); assert 'sklearn' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_folder_directory_and_zip_give_the_same_data(tmp_path):
    root = write_tree(tmp_path / "tree")
    from_dir = data.load(f"folder:{root}", val_fraction=0.25)
    from_zip = data.load(f"folder:{zip_tree(root, tmp_path / 'tree.zip')}", val_fraction=0.25)
    wrapped = data.load(f"folder:{zip_tree(root, tmp_path / 'wrapped.zip', 'top/')}", val_fraction=0.25)
    assert from_dir.classes == ("cat", "dog")
    assert (len(from_dir.train), len(from_dir.val), len(from_dir.test)) == (9, 3, 4)
    for other in (from_zip, wrapped):
        np.testing.assert_array_equal(other.train.images, from_dir.train.images)
        np.testing.assert_array_equal(other.test.labels, from_dir.test.labels)
    assert from_dir.image_shape == (8, 8, 3)
    # Statistics of the training images normalize unknown data sets.
    assert from_dir.mean == pytest.approx(tuple(from_dir.train.images.reshape(-1, 3).mean(0) / 255))
    assert from_dir.normalization == "computed from the training split"


def test_tiny_imagenet_layout(tmp_path):
    rng = np.random.default_rng(0)
    wnids = ["n01", "n02"]
    for w in wnids:
        (tmp_path / "train" / w / "images").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
                tmp_path / "train" / w / "images" / f"{w}_{i}.JPEG")
    (tmp_path / "val" / "images").mkdir(parents=True)
    lines = []
    for i, w in enumerate(["n02", "n01", "n02"]):
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(
            tmp_path / "val" / "images" / f"val_{i}.JPEG")  # grayscale, as some Tiny-ImageNet images
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t10\t10")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    d = data.load(f"folder:{tmp_path}", val_fraction=0.0)
    assert d.classes == ("n01", "n02") and d.image_shape == (64, 64, 3)
    assert list(d.test.labels) == [1, 0, 1]
    assert len(d.train) == 6
    # Recognised by its layout, not its name: PAPER.md's Tiny-ImageNet constants.
    tiny_mean, tiny_std = (0.480, 0.448, 0.397), (0.276, 0.269, 0.282)
    assert (d.mean, d.std, d.normalization) == (tiny_mean, tiny_std, "tiny_imagenet")
    archive = tmp_path.parent / "my_download-v2.zip"  # any file name, one wrapping folder inside
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(tmp_path.rglob("*")):
            if f.is_file():
                zf.write(f, f"tiny-imagenet-200/{f.relative_to(tmp_path).as_posix()}")
    zipped = data.load(f"folder:{archive}", val_fraction=0.0)
    assert (zipped.mean, zipped.std, zipped.normalization) == (tiny_mean, tiny_std, "tiny_imagenet")
    np.testing.assert_array_equal(zipped.test.images, d.test.images)


def test_shared_cifar10_slice(shared_cifar10):
    d = data.load(f"folder:{shared_cifar10}", max_train=300, max_test=100)
    assert d.classes[:3] == ("airplane", "automobile", "bird") and d.num_classes == 10
    assert d.image_shape == (32, 32, 3)
    assert (len(d.train), len(d.val), len(d.test)) == (270, 30, 100)
    assert len(set(d.test.labels.tolist())) > 5
    assert 0.4 < d.mean[0] < 0.55  # CIFAR-10's red mean is 0.491


def test_tfds_mock_cifar100():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        d = data.load("tfds:cifar100")
    assert d.image_shape == (32, 32, 3) and d.num_classes == 100
    assert len(d.train) + len(d.val) == 40 and len(d.test) == 40
    assert d.mean == data.NORMALIZATION["cifar100"][0]
    assert d.normalization == "cifar100"


# ------------------------------------------------------------------------ bad input


def test_unknown_source():
    with pytest.raises(data.DataError, match="unknown data source 'mnist'"):
        data.load("mnist")


def test_missing_path(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load(f"folder:{tmp_path / 'nope.zip'}")


def test_zip_without_train_and_test(tmp_path):
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("images/a.png", b"x")
    with pytest.raises(data.DataError, match="no train/<class>/ folders"):
        data.load(f"folder:{z}")


def test_not_a_zip(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("hello")
    with pytest.raises(data.DataError, match="neither a directory nor a .zip"):
        data.load(f"folder:{f}")


def test_unreadable_image(tmp_path):
    root = write_tree(tmp_path)
    (root / "train" / "cat" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(data.DataError, match=r"cannot read image train/cat/broken.png"):
        data.load(f"folder:{root}")


def test_mixed_sizes(tmp_path):
    root = write_tree(tmp_path)
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(root / "train" / "dog" / "odd.png")
    with pytest.raises(data.DataError, match="mixed sizes.*8x9"):
        data.load(f"folder:{root}")


def test_empty_class_folder(tmp_path):
    root = write_tree(tmp_path)
    (root / "train" / "bird").mkdir()
    (root / "test" / "bird").mkdir()
    with pytest.raises(data.DataError, match=r"class folder train/bird/ holds no images"):
        data.load(f"folder:{root}")


def test_tfds_unprepared_without_network_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_network_reachable", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(data.DataError, match="not prepared .* cannot be downloaded"):
        data.load("tfds:cifar10", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 10


def test_tfds_network_probe_is_bounded(monkeypatch):
    # A black-holed host: every connection attempt hangs until its timeout. The probe must give
    # each host a timeout, give up on it, and answer False (this machine has no network, so a
    # real unroutable address fails at once and would prove nothing).
    import socket

    given = []

    def hang(address, timeout=None, **kwargs):
        given.append(timeout)
        if timeout is None:
            raise AssertionError("connection attempt without a timeout")
        time.sleep(timeout)
        raise socket.timeout("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    assert sources._network_reachable(hosts=("a.example", "b.example"), timeout=0.2) is False
    assert given == [0.2, 0.2]
    assert time.perf_counter() - start < 0.4 + 1.0

    # A resolver that hangs (getaddrinfo ignores the socket timeout) must not hang the probe.
    def resolve_slowly(*args, **kwargs):
        time.sleep(5)  # then fail as a resolver does, inside the probe's thread
        raise socket.gaierror("temporary failure in name resolution")

    monkeypatch.setattr(socket, "create_connection", resolve_slowly)
    start = time.perf_counter()
    assert sources._network_reachable(hosts=("a.example",), timeout=0.2) is False
    assert time.perf_counter() - start < 2


def test_tfds_unknown_dataset():
    with pytest.raises(data.DataError, match="tfds has no data set 'no_such_set'"):
        data.load("tfds:no_such_set")


def test_val_fraction_out_of_range():
    with pytest.raises(data.DataError, match=r"val_fraction must be in \[0, 1\)"):
        data.load("digits", val_fraction=1.0)


# ------------------------------------------------------------------------ device side


def test_random_crop_flip_is_a_shifted_crop_of_the_padded_image():
    images = jnp.asarray(np.random.default_rng(0).integers(1, 255, (16, 8, 8, 3)), jnp.uint8)
    out = np.asarray(jax.jit(data.random_crop_flip)(images, jax.random.key(3)))
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(np.asarray(images), ((0, 0), (4, 4), (4, 4), (0, 0)))
    shifted = flipped = 0
    for img, crop in zip(padded, out):
        windows = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if np.array_equal(crop, (img[dy:dy + 8, dx:dx + 8][:, ::-1] if f else img[dy:dy + 8, dx:dx + 8]))]
        assert windows, "every output is a crop (maybe flipped) of its zero-padded input"
        shifted += all((dy, dx) != (4, 4) for dy, dx, _ in windows)
        flipped += all(f for _, _, f in windows)
    assert shifted > 8 and 2 < flipped < 14


def test_normalize():
    x = jnp.full((1, 2, 2, 3), 255, jnp.uint8)
    out = data.normalize(x, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    np.testing.assert_allclose(out[0, 0, 0], [2.0, 1.0, 0.5])


def test_batches_cover_the_split():
    split = data.Split(np.zeros((10, 2, 2, 3), np.uint8), np.arange(10, dtype=np.int32))
    seen = np.concatenate([labels for _, labels in data.train_batches(split, 3, seed=0, epoch=0)])
    assert len(seen) == 9 and len(set(seen.tolist())) == 9  # last partial batch dropped
    assert not np.array_equal(data.epoch_order(10, 0, 0), data.epoch_order(10, 0, 1))
    batches = list(data.eval_batches(split, 4))
    assert [b[2].sum() for b in batches] == [4, 4, 2]
    assert batches[-1][0].shape == (4, 2, 2, 3)


def test_a_training_subset_keeps_each_class_share_and_the_teachers_normalization():
    full = data.load("digits")
    counts = np.bincount(full.train.labels, minlength=10)
    part = data.train_subset(full, 300, seed=0)
    kept = np.bincount(part.train.labels, minlength=10)
    assert kept.sum() == 300 and np.all(np.abs(kept - 300 * counts / counts.sum()) < 1)  # each class its share
    # The validation and test splits and the normalization are the full data's (a teacher
    # trained on it sees its inputs as it was trained); only the training split shrinks.
    assert part.val is full.val and part.test is full.test and (part.mean, part.std) == (full.mean, full.std)
    # The kept images are images of the full split, with their labels.
    rows = {img.tobytes(): int(lab) for img, lab in zip(full.train.images, full.train.labels)}
    assert all(rows[img.tobytes()] == int(lab) for img, lab in zip(part.train.images, part.train.labels))
    again = data.train_subset(full, 300, seed=0)
    other = data.train_subset(full, 300, seed=1)
    assert np.array_equal(again.train.images, part.train.images)  # fixed by the seed alone
    assert not np.array_equal(other.train.images, part.train.images)
    assert data.train_subset(full, None) is full and data.train_subset(full, 10**6) is full
    with pytest.raises(data.DataError, match="cannot hold one image of each of 10 classes"):
        data.train_subset(full, 9)
