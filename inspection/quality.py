"""Pixel-level quality measures of a photo: sharpness, brightness and a perceptual hash.

All three work on a grey image (``uint8``, 2-D). Sharpness is measured on a copy scaled to a fixed size,
so that one threshold serves a 640×512 thermal frame and a 45 MP mapping photo alike.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> noise = rng.integers(0, 256, (300, 400), dtype=np.uint8)
>>> sharpness(noise) > sharpness(np.full((300, 400), 128, np.uint8))
True
>>> brightness(np.zeros((10, 10), np.uint8))
0.0
>>> hamming(dhash(noise), dhash(noise))
0
"""

from __future__ import annotations

import cv2
import numpy as np

# Long side of the copy sharpness is measured on. Variance of the Laplacian grows with detail per pixel,
# so measuring every photo at one size makes it a property of the scene and the lens, not of the sensor.
SHARPNESS_SIZE = 1024
# dHash compares neighbouring cells of a 17×16 thumbnail: 256 bits. The common 64-bit hash is too coarse
# for mapping flights: consecutive frames of the Toledo survey differ in only 6 of its 64 bits, but in 63
# or more of 256, while a resized, re-encoded copy differs in at most 3 of 256.
_HASH_WIDTH, _HASH_HEIGHT = 17, 16


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian of ``grey`` scaled (area-averaged) to a long side of 1024 pixels.

    Smaller images are measured as they are: upscaling would only add blur.
    """
    scaled = _fit(grey, SHARPNESS_SIZE)
    return float(cv2.Laplacian(scaled, cv2.CV_64F).var())


def brightness(grey: np.ndarray) -> float:
    """Mean grey level, 0 (black) to 255 (white)."""
    return float(grey.mean())


def dhash(grey: np.ndarray) -> int:
    """256-bit difference hash: whether each cell of a 17×16 thumbnail is brighter than its right neighbour.

    Re-encoding, resizing and small exposure changes keep the hash within a few bits; a different view does not.
    """
    thumb = cv2.resize(grey, (_HASH_WIDTH, _HASH_HEIGHT), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (thumb[:, 1:] > thumb[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


def _fit(grey: np.ndarray, size: int) -> np.ndarray:
    height, width = grey.shape
    scale = size / max(height, width)
    if scale >= 1:
        return grey
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(grey, new_size, interpolation=cv2.INTER_AREA)
