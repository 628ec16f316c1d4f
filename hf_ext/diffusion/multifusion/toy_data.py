"""Toy training data of MultiFusion: coloured shapes drawn with PIL and captioned (stage B), and English–German
sentence pairs (stage A). Item ``i`` of :class:`ShapesDataset` is a deterministic function of ``(seed, i)``.

Example:
    >>> ShapesDataset(4, seed=0)[0]["caption"].startswith("a ")
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from hf_ext.utils.validation import check_int, check_size

if TYPE_CHECKING:
    import PIL.Image

__all__ = ["COLORS", "SENTENCE_PAIRS", "SHAPES", "ShapesDataset", "draw_shape"]

#: Colours (name -> RGB) and shapes of the synthetic image–caption set.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 220, 30),
    "purple": (140, 40, 170), "orange": (245, 140, 20), "white": (245, 245, 245), "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")

#: Built-in sentence pairs (English – German translations) for a toy stage A run; use SNLI/MNLI pairs for real.
SENTENCE_PAIRS: list[tuple[str, str]] = [
    ("a red apple on a table", "ein roter Apfel auf einem Tisch"), ("a dog playing in the snow", "ein Hund spielt im Schnee"),
    ("a blue car in front of a house", "ein blaues Auto vor einem Haus"), ("an astronaut riding a horse", "ein Astronaut reitet ein Pferd"),
    ("one cat", "eine Katze"), ("two dogs", "zwei Hunde"), ("a green tree", "ein gruener Baum"), ("an old man", "ein alter Mann"),
]


def draw_shape(color: str, shape: str, size: int = 32, *, background: tuple[int, int, int] = (128, 128, 128),
               jitter: tuple[int, int] = (0, 0), scale: float = 0.6) -> PIL.Image.Image:
    """A PIL image of one filled ``shape`` in ``color`` on a flat background.

    Args:
        color: one of :data:`COLORS`.
        shape: one of :data:`SHAPES`.
        size: side of the square image in pixels.
        background: RGB of the background.
        jitter: ``(dx, dy)`` offset of the shape's centre in pixels.
        scale: the shape's extent as a fraction of ``size``.

    Example:
        >>> draw_shape("red", "circle").getpixel((16, 16))
        (220, 30, 30)
    """
    from PIL import Image, ImageDraw

    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; choose one of {sorted(COLORS)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    img = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    half = scale * size / 2
    cx, cy = size / 2 + jitter[0], size / 2 + jitter[1]
    box = [cx - half, cy - half, cx + half, cy + half]
    fill = COLORS[color]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
    return img


class ShapesDataset(torch.utils.data.Dataset):
    """Synthetic image–caption pairs: coloured shapes drawn with PIL, captioned ``"a <colour> <shape>"``.

    Item ``i`` is a deterministic function of ``(seed, i)``: ``{"index", "image" (PIL), "caption", "color", "shape"}``.

    Args:
        n: number of pairs.
        size: image side in pixels.
        seed: dataset seed.
        colors, shapes: restrict the vocabulary.
    """

    def __init__(self, n: int, *, size: int = 32, seed: int = 0, colors: Sequence[str] | None = None,
                 shapes: Sequence[str] | None = None):
        n = check_size("n", n)
        check_size("size", size)
        check_int("seed", seed)
        self.n, self.size, self.seed = n, size, seed
        self.colors = list(colors or COLORS)
        self.shapes = list(shapes or SHAPES)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        color = self.colors[int(torch.randint(len(self.colors), (1,), generator=g))]
        shape = self.shapes[int(torch.randint(len(self.shapes), (1,), generator=g))]
        j = self.size // 8
        jitter = tuple(int(v) for v in torch.randint(-j, j + 1, (2,), generator=g))
        image = draw_shape(color, shape, self.size, jitter=jitter)
        return {"index": index, "image": image, "caption": f"a {color} {shape}", "color": color, "shape": shape}
