"""Damaged data files end in one sentence that names the file: IDX files (MNIST,
Fashion-MNIST) and the photographs of colour transfer."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from ot_experiments.errors import ConfigError

from .conftest import train
from .test_bad_input import assert_one_sentence, fast


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("empty-idx3-ubyte", b"", "is empty"),
        ("two-idx3-ubyte", b"\x00\x00", "is truncated"),
        ("header-idx3-ubyte", _idx_bytes(np.zeros((5, 4, 4)))[:9], "is truncated"),
        ("short-idx3-ubyte", _idx_bytes(np.zeros((5, 4, 4)))[:50], "is truncated"),
        (
            "short-idx3-ubyte.gz",
            gzip.compress(_idx_bytes(np.zeros((5, 4, 4))), mtime=0)[:30],
            "gzip",
        ),
        ("plain-idx3-ubyte.gz", _idx_bytes(np.zeros((5, 4, 4))), "gzip"),
        ("magic-idx3-ubyte", b"\x01\x02\x03\x04", "not an IDX file"),
    ],
    # plain ids: every pytest-xdist worker must collect the same names (bytes would leak
    # gzip's time stamp into them)
    ids=["empty", "two-bytes", "header", "short", "short-gz", "plain-gz", "magic"],
)
def test_damaged_idx_file_is_named(tmp_path, name, content, said):
    from ot_experiments.data import read_idx
    from ot_experiments.errors import DataFileError

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataFileError) as err:
        read_idx(path)
    msg = str(err.value)
    assert said in msg and str(path) in msg and "delete it" in msg and "\n" not in msg
    assert isinstance(err.value, ValueError)  # as before: callers catching ValueError still do


def test_labels_shorter_than_images_is_named(tmp_path):
    from ot_experiments.data import load_mnist
    from ot_experiments.errors import DataFileError

    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((5, 28, 28))))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(3)))
    with pytest.raises(DataFileError, match="holds 3 labels but .* holds 5 images"):
        load_mnist("mnist", "train", root=tmp_path, download=False)


def test_damaged_idx_file_in_a_run_is_one_sentence(tmp_path):
    data = tmp_path / "idx"
    data.mkdir()
    (data / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((5, 28, 28)))[:100])
    (data / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5)))
    overrides = fast(
        "method=gradnet", "problem=mnist_morphing", f"problem.data_dir={data}", "threads=1"
    )
    proc = train(tmp_path / "out", *overrides, check=False)
    assert_one_sentence(proc, "train-images-idx3-ubyte is truncated")


def _png(path: Path, shape) -> Path:
    import skimage.io

    skimage.io.imsave(path, np.full(shape, 128, np.uint8), check_contrast=False)
    return path


def _empty(folder: Path) -> Path:
    (folder / "zero.png").write_bytes(b"")
    return folder / "zero.png"


def _text(folder: Path) -> Path:
    (folder / "text.jpg").write_text("hello, not a photograph")
    return folder / "text.jpg"


def _tiny(folder: Path) -> Path:
    return _png(folder / "tiny.png", (1, 1, 3))


def _cut(folder: Path) -> Path:
    whole = _png(folder / "whole.png", (32, 32, 3)).read_bytes()
    (folder / "cut.png").write_bytes(whole[:40])
    return folder / "cut.png"


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (_empty, "is empty (0 bytes)"),
        (_text, "is not an image"),
        (_tiny, "has only 1×1 pixels"),
        (_cut, "starts like a PNG image but is damaged"),
    ],
    ids=["empty", "text", "1x1", "truncated"],
)
def test_bad_image_file_is_named(tmp_path, make, said):
    from ot_experiments.problems.color_transfer import load_rgb

    path = make(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_rgb(str(path))
    msg = str(err.value)
    assert said in msg and path.name in msg and "pip install" not in msg and "\n" not in msg
