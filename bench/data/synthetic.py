"""Synthetic scenes: a deterministic generator of boxes and masks, nothing read or downloaded."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from bench.data.common import Sample

SYNTHETIC_CLASSES = ("rectangle", "ellipse", "triangle", "cross")


def render_scene(seed: int, index: int, height: int, width: int, num_classes: int = 3) -> dict:
    """Draw scene ``index`` of stream ``seed``: 1-4 shapes on a textured, coloured background.

    A class is a shape (rectangle, ellipse, triangle, cross) with its own band of hues; shapes
    are rotated, stretched, textured and overlap, and the background is textured in any colour
    (those of the objects included), so telling objects from background takes more than a
    colour lookup, and a fixed guess (all background) scores low. Returns numpy arrays:
    ``image`` uint8 (H, W, 3), ``masks`` bool (N, H, W) of the visible part of each object,
    ``labels`` (N,) in 1..K.
    """
    if not 1 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"num_classes must be 1..{len(SYNTHETIC_CLASSES)}")
    rng = np.random.default_rng([seed, index])
    image = _textured_background(rng, height, width)
    side = min(height, width)
    masks: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, 5))):
        label = int(rng.integers(1, num_classes + 1))
        size = rng.uniform(0.25, 0.6) * side
        drawn = _shape_mask(rng, SYNTHETIC_CLASSES[label - 1], size, height, width)
        if drawn.sum() < 16:
            continue
        colour = _class_colour(rng, label, num_classes)
        texture = rng.normal(0, rng.uniform(5, 30), (height, width, 1)) + rng.normal(0, 8, (height, width, 3))
        image = np.where(drawn[..., None], np.clip(colour + texture, 0, 255), image)
        for earlier in masks:
            earlier &= ~drawn
        masks.append(drawn)
        labels.append(label)
    # Keep objects of which enough stays visible to be recognisable.
    keep = [i for i, m in enumerate(masks) if m.sum() >= max(16, 0.02 * side * side)]
    return {
        "image": image.astype(np.uint8),
        "masks": np.stack([masks[i] for i in keep]) if keep else np.zeros((0, height, width), bool),
        "labels": np.array([labels[i] for i in keep], dtype=np.int64),
    }


def _class_colour(rng: np.random.Generator, label: int, num_classes: int) -> np.ndarray:
    """An RGB colour from the class's own band of hues (bands do not overlap), random saturation
    and brightness: colour hints at the class, but the background can take any colour."""
    band = 1.0 / num_classes
    hue = ((label - 1) + rng.uniform(0.2, 0.8)) * band
    saturation, value = rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0)
    hsv = np.array([[[hue * 255, saturation * 255, value * 255]]], dtype=np.uint8)
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"), dtype=np.float64)[0, 0]


def _textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Random base colour + smooth blotches + stripes + pixel noise (float, H x W x 3)."""
    base = rng.uniform(40, 215, 3)
    coarse = rng.normal(0, 45, (max(2, height // 16), max(2, width // 16), 3))
    blotches = np.asarray(
        Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((width, height), Image.BICUBIC),
        dtype=np.float32,
    ) - 128
    yy, xx = np.mgrid[0:height, 0:width]
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
    stripes = 20 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)[..., None]
    noise = rng.normal(0, 12, (height, width, 3))
    return np.clip(base + blotches + stripes * rng.uniform(0, 1) + noise, 0, 255)


def _shape_mask(rng: np.random.Generator, shape: str, size: float, height: int, width: int) -> np.ndarray:
    """A filled shape of about ``size`` pixels across, randomly placed, rotated and stretched."""
    cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
    stretch = rng.uniform(0.6, 1.0)
    half_w, half_h = size / 2, size * stretch / 2
    if rng.random() < 0.5:
        half_w, half_h = half_h, half_w
    theta = rng.uniform(0, 2 * np.pi)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "ellipse":
        draw.ellipse([cx - half_w, cy - half_h, cx + half_w, cy + half_h], fill=255)
        canvas = canvas.rotate(np.degrees(theta), center=(cx, cy))
    else:
        if shape == "rectangle":
            corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        elif shape == "triangle":
            corners = [(0, -1), (1, 1), (-1, 1)]
        else:  # cross: a plus sign, arms a third of the size wide
            t = 1 / 3
            corners = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t), (-1, t),
                       (-1, -t), (-t, -t)]
        cos, sin = np.cos(theta), np.sin(theta)
        points = [
            (cx + u * half_w * cos - v * half_h * sin, cy + u * half_w * sin + v * half_h * cos) for u, v in corners
        ]
        draw.polygon(points, fill=255)
    return np.asarray(canvas) > 127


class SyntheticScenes(Dataset):
    """``length`` scenes of stream ``seed``, rendered on demand (same index, same scene)."""

    def __init__(self, length: int, height: int, width: int, num_classes: int = 3, seed: int = 0):
        self.length, self.height, self.width = length, height, width
        self.num_classes, self.seed = num_classes, seed
        self.class_names = ["background", *SYNTHETIC_CLASSES[:num_classes]]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.length:
            raise IndexError(index)  # ends plain iteration; the generator itself has no end
        scene = render_scene(self.seed, index, self.height, self.width, self.num_classes)
        return sample_from_arrays(scene["image"], scene["masks"], scene["labels"])


def sample_from_arrays(image: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> Sample:
    """Image + visible instance masks -> the common sample (boxes are the masks' extents)."""
    height, width = image.shape[:2]
    semantic = np.zeros((height, width), np.int64)
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, (mask, label) in enumerate(zip(masks, labels)):
        semantic[mask] = label
        ys, xs = np.nonzero(mask)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255).contiguous(),
        "boxes": torch.from_numpy(boxes),
        "labels": torch.as_tensor(labels, dtype=torch.int64),
        "semantic": torch.from_numpy(semantic),
    }

