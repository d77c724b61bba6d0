"""The sample every data source yields, and what they share: image decoding, collation, splits,
and the checks that keep an untrusted data set from reaching outside its folder or sizing a
buffer from its own metadata."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from bench.errors import BadInput, first_line  # first_line: re-exported for coco.py and ade20k.py

IGNORE_INDEX = 255

# The largest image (width x height, in pixels) a data set may hold: PIL's own default
# decompression-bomb limit (Image.MAX_IMAGE_PIXELS, ~89.5 Mpx: 1024 * 1024 * 1024 // 4 // 3),
# fixed here so that it holds whatever a caller sets PIL's to.
MAX_IMAGE_PIXELS = 89_478_485

Sample = dict[str, Any]


def one_line(text: str) -> str:
    """``text`` with line breaks and control characters escaped (``\\n``) and undecodable
    file-name bytes (lone surrogates) shown as ``\\udcXX``: safe for a one-line message
    (bench.sanitize's rule, the one every message and export uses)."""
    from bench.sanitize import visible

    return visible(text, one_line=True)


def data_error(message: str) -> BadInput:
    """The BadInput for a faulty data set: ``message`` made one line (see :func:`one_line`)."""
    return BadInput(one_line(message))


def show(value: Any, limit: int = 60) -> str:
    """A short repr of a value read from a data set, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_int(value: Any) -> bool:
    """A JSON integer (bool excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A JSON number (bool excluded) that is neither NaN nor infinite, nor too large for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


def check_pixel_limit(width: int, height: int, what: str) -> None:
    """Refuse an image of more than MAX_IMAGE_PIXELS pixels (``what`` names it in the message)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise data_error(
            f"{what} is {width}x{height} = {width * height} pixels, over the limit of {MAX_IMAGE_PIXELS} "
            f"(PIL's decompression-bomb limit); refusing to decode it"
        )


def resolve_inside(folder: Path, name: str, source: str, field: str, *, resolved_folder: Path | None = None) -> Path:
    """``folder / name`` after checking that it resolves (symlinks followed) inside ``folder``.

    ``name`` comes from an untrusted data set: an absolute path, ``..`` components or a symlink
    that lead outside ``folder`` are refused with a BadInput naming ``source`` (the file that
    lists the name) and ``field``. Nothing is opened; only the path is resolved. Pass
    ``resolved_folder`` (``folder.resolve()``) when checking many names in one folder.
    """
    if not isinstance(name, str) or not name:
        raise data_error(f"{source}: {field} {show(name)}: expected a non-empty file name")
    path = folder / name
    try:
        base = resolved_folder or folder.resolve()
        resolved = path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, symlink loops, names too long
        raise data_error(f"{source}: {field} {show(name)}: not a usable path ({first_line(exc)})") from None
    if resolved == base or not resolved.is_relative_to(base):
        raise data_error(f"{source}: {field} {show(name)} resolves outside the folder {base}: refused")
    return path


def part_inside(root: Path, part: Path, what: str) -> Path:
    """``part`` (an image folder, an annotation file of the data set at ``root``) resolved, after
    checking that it resolves (symlinks followed) inside ``root`` resolved.

    The rule is made against the data set's root, not the part's own folder: a ``train2017/``
    that is itself a symlink leaving the data set would otherwise become the folder every
    ``file_name`` is checked against, and a data set could read anything under its target. A data
    set kept elsewhere is given by its root: ``coco:D`` may be a symlink (it is resolved first).
    """
    try:
        base, resolved = root.resolve(), part.resolve()
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise data_error(f"{what} {part}: not a usable path ({first_line(exc)})") from None
    if resolved == base or not resolved.is_relative_to(base):
        raise data_error(f"{what} {part} resolves to {resolved}, outside the data set folder {base}: refused; "
                         f"pass the folder that holds it, or link the whole data set folder instead")
    return resolved


def _lazy_open(path: Path, what: str) -> Image.Image:
    """Open ``path`` without decoding its pixels; the size is checked against MAX_IMAGE_PIXELS."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise data_error(f"{what} {path} is over the limit of {MAX_IMAGE_PIXELS} pixels ({first_line(exc)})") from None
    except Exception as exc:  # PIL raises many types on malformed files; all are bad input here
        raise data_error(f"cannot read {what} {path}: {first_line(exc)}") from None
    try:
        check_pixel_limit(*image.size, f"{what} {path}")
    except BadInput:
        image.close()
        raise
    return image


def image_header(path: Path, what: str = "image") -> tuple[tuple[int, int], str]:
    """``((width, height), mode)`` of an image file from its header alone (no pixel is decoded);
    an unreadable file or one over MAX_IMAGE_PIXELS is a one-line BadInput."""
    with _lazy_open(path, what) as image:
        return image.size, image.mode


def _open_image(path: Path, mode: str | None, *, expect_size: tuple[int, int] | None = None,
                expected_by: str = "", what: str = "image") -> Image.Image:
    """Decode ``path``: refused, before any pixel is decoded, when over MAX_IMAGE_PIXELS or when its
    (width, height) differs from ``expect_size`` (``expected_by`` names the file and field that
    claim that size)."""
    image = _lazy_open(path, what)
    if expect_size is not None and tuple(image.size) != tuple(expect_size):
        image.close()
        raise data_error(
            f"{what} {path} is {image.size[0]}x{image.size[1]} but {expected_by} says "
            f"{expect_size[0]}x{expect_size[1]} (width x height)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            return image.convert(mode) if mode else image
    except Exception as exc:  # truncated or corrupt data: PIL raises OSError, ValueError, SyntaxError, ...
        raise data_error(f"cannot read {what} {path}: {first_line(exc)}") from None


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255).contiguous()


@dataclass
class DataSplits:
    train: Dataset
    val: Dataset
    num_classes: int  # including background (label 0)
    class_names: list[str]
    source: str



def collate(samples: list[Sample]) -> dict[str, Any]:
    """Stack images and label maps (all one size); keep per-image boxes and labels as lists."""
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "semantic": torch.stack([s["semantic"] for s in samples]),
        "targets": [{"boxes": s["boxes"], "labels": s["labels"]} for s in samples],
    }
