"""Colour maps and side-by-side panels of predictions, as DeepLab's `vis.py`.

Palettes as DeepLab's `utils/get_dataset_colormap.py`: `pascal` (bits of the
class id interleaved into RGB, 256 entries), `cityscapes` (19 train ids),
`ade20k` (the benchmark's 151 colours), and `camvid` (the SegNet 11-class
colours). `dataset` (new) uses the colours of the dataset registry. Unused
entries up to 256 are black.

Deviations from DeepLab: a `*_panel.png` per image shows image | ground truth |
prediction side by side (DeepLab writes separate files only); images are
written with Pillow instead of `tf.gfile` + PIL.
"""

import io

import numpy as np
from PIL import Image

from deeplab_dpc.core import artefacts
from deeplab_dpc.data import registry

COLORMAP_TYPES = ("pascal", "cityscapes", "ade20k", "camvid", "dataset")
PALETTE_SIZE = 256

_ADE20K = (
    0, 0, 0, 120, 120, 120, 180, 120, 120, 6, 230, 230, 80, 50, 50, 4, 200, 3,
    120, 120, 80, 140, 140, 140, 204, 5, 255, 230, 230, 230, 4, 250, 7,
    224, 5, 255, 235, 255, 7, 150, 5, 61, 120, 120, 70, 8, 255, 51, 255, 6, 82,
    143, 255, 140, 204, 255, 4, 255, 51, 7, 204, 70, 3, 0, 102, 200,
    61, 230, 250, 255, 6, 51, 11, 102, 255, 255, 7, 71, 255, 9, 224, 9, 7, 230,
    220, 220, 220, 255, 9, 92, 112, 9, 255, 8, 255, 214, 7, 255, 224,
    255, 184, 6, 10, 255, 71, 255, 41, 10, 7, 255, 255, 224, 255, 8, 102, 8, 255,
    255, 61, 6, 255, 194, 7, 255, 122, 8, 0, 255, 20, 255, 8, 41, 255, 5, 153,
    6, 51, 255, 235, 12, 255, 160, 150, 20, 0, 163, 255, 140, 140, 140,
    250, 10, 15, 20, 255, 0, 31, 255, 0, 255, 31, 0, 255, 224, 0, 153, 255, 0,
    0, 0, 255, 255, 71, 0, 0, 235, 255, 0, 173, 255, 31, 0, 255, 11, 200, 200,
    255, 82, 0, 0, 255, 245, 0, 61, 255, 0, 255, 112, 0, 255, 133, 255, 0, 0,
    255, 163, 0, 255, 102, 0, 194, 255, 0, 0, 143, 255, 51, 255, 0, 0, 82, 255,
    0, 255, 41, 0, 255, 173, 10, 0, 255, 173, 255, 0, 0, 255, 153, 255, 92, 0,
    255, 0, 255, 255, 0, 245, 255, 0, 102, 255, 173, 0, 255, 0, 20,
    255, 184, 184, 0, 31, 255, 0, 255, 61, 0, 71, 255, 255, 0, 204, 0, 255, 194,
    0, 255, 82, 0, 10, 255, 0, 112, 255, 51, 0, 255, 0, 194, 255, 0, 122, 255,
    0, 255, 163, 255, 153, 0, 0, 255, 10, 255, 112, 0, 143, 255, 0, 82, 0, 255,
    163, 255, 0, 255, 235, 0, 8, 184, 170, 133, 0, 255, 0, 255, 92, 184, 0, 255,
    255, 0, 31, 0, 184, 255, 0, 214, 255, 255, 0, 112, 92, 255, 0, 0, 224, 255,
    112, 224, 255, 70, 184, 160, 163, 0, 255, 153, 0, 255, 71, 255, 0,
    255, 0, 163, 255, 204, 0, 255, 0, 143, 0, 255, 235, 133, 255, 0, 255, 0, 235,
    245, 0, 255, 255, 0, 122, 255, 245, 0, 10, 190, 212, 214, 255, 0, 0, 204, 255,
    20, 0, 255, 255, 255, 0, 0, 153, 255, 0, 41, 255, 0, 255, 204, 41, 0, 255,
    41, 255, 0, 173, 0, 255, 0, 245, 255, 71, 0, 255, 122, 0, 255, 0, 255, 184,
    0, 92, 255, 184, 255, 0, 0, 133, 255, 255, 214, 0, 25, 194, 194, 102, 255, 0,
    92, 0, 255,
)  # fmt: skip


def _padded(colors):
    palette = np.zeros((PALETTE_SIZE, 3), np.uint8)
    colors = np.asarray(colors, np.uint8).reshape(-1, 3)[:PALETTE_SIZE]
    palette[: len(colors)] = colors
    return palette


def get_colormap(colormap_type, info=None):
    """[256, 3] uint8 palette for `colormap_type`; `dataset` needs `info`."""
    if colormap_type == "pascal":
        return _padded(registry.pascal_colormap(PALETTE_SIZE))
    if colormap_type == "cityscapes":
        return _padded(registry.DATASETS["cityscapes"].colormap)
    if colormap_type == "camvid":
        return _padded(registry.DATASETS["camvid"].colormap)
    if colormap_type == "ade20k":
        return _padded(_ADE20K)
    if colormap_type == "dataset":
        if info is None:
            raise ValueError("colormap_type 'dataset' needs the dataset info")
        return _padded(info.colormap)
    raise ValueError(
        f"colormap_type: unknown {colormap_type!r}; known: {', '.join(COLORMAP_TYPES)}"
    )


def colorize(label, colormap):
    """RGB uint8 [H, W, 3] of a class-id map [H, W] (or [H, W, 1])."""
    label = np.asarray(label)
    if label.ndim == 3 and label.shape[-1] == 1:
        label = label[..., 0]
    if label.ndim != 2:
        raise ValueError(f"expected a 2-D label map, got shape {label.shape}")
    if label.min(initial=0) < 0 or label.max(initial=0) >= len(colormap):
        raise ValueError(
            f"label values must be in [0, {len(colormap)}), got "
            f"[{label.min()}, {label.max()}]"
        )
    return np.asarray(colormap, np.uint8)[label]


def to_uint8_image(image):
    """An image in [-1, 1] (the model's input range) as uint8 RGB."""
    image = (np.asarray(image, np.float32) + 1.0) * 127.5
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def side_by_side(*panels, gap=4):
    """Joins equally tall RGB uint8 images left to right with white gaps."""
    height = max(p.shape[0] for p in panels)
    parts = []
    for index, panel in enumerate(panels):
        if index:
            parts.append(np.full((height, gap, 3), 255, np.uint8))
        pad = height - panel.shape[0]
        parts.append(np.pad(panel, ((0, pad), (0, 0), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=1)


PANEL_TITLE_HEIGHT = 16  # pixels above the panels
PANEL_MIN_WIDTH = 160  # smaller panels are enlarged (nearest neighbour)
LEGEND_ROW_HEIGHT = 16


def legend_entries(class_names, colormap, *label_maps, ignore_label=None):
    """[(name, colour)] of the classes present in any of `label_maps`, by id."""
    present = set()
    for labels in label_maps:
        present.update(int(v) for v in np.unique(labels))
    present.discard(ignore_label)
    return [
        (class_names[i], tuple(int(c) for c in colormap[i]))
        for i in sorted(present)
        if 0 <= i < len(class_names)
    ]


def titled_panel(panels, titles, legend=(), gap=4):
    """Panels side by side, a title above each and a legend of (name, colour) below.

    Panels narrower than `PANEL_MIN_WIDTH` are enlarged by an integer factor
    (nearest neighbour: label colours stay exact) so titles and legend fit.
    """
    from PIL import ImageDraw, ImageFont

    scale = max(1, -(-PANEL_MIN_WIDTH // min(p.shape[1] for p in panels)))
    panels = [np.repeat(np.repeat(p, scale, 0), scale, 1) for p in panels]
    body = side_by_side(*panels, gap=gap)
    font = ImageFont.load_default()
    width = body.shape[1]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows, x = [[]], 4
    for name, colour in legend:  # wrap the legend over as many rows as needed
        item = 14 + int(probe.textlength(name, font=font)) + 12
        if x + item > width and rows[-1]:
            rows.append([])
            x = 4
        rows[-1].append((x, name, colour))
        x += item
    legend_h = LEGEND_ROW_HEIGHT * len(rows) + 4 if legend else 0
    canvas = Image.new(
        "RGB", (width, PANEL_TITLE_HEIGHT + body.shape[0] + legend_h), "white"
    )
    canvas.paste(Image.fromarray(body), (0, PANEL_TITLE_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    left = 0
    for panel, title in zip(panels, titles):
        w = panel.shape[1]
        text_w = probe.textlength(title, font=font)
        draw.text((left + (w - text_w) / 2, 2), title, fill="black", font=font)
        left += w + gap
    top = PANEL_TITLE_HEIGHT + body.shape[0] + 4
    for r, row in enumerate(rows):
        y = top + r * LEGEND_ROW_HEIGHT
        for x, name, colour in row:
            draw.rectangle([x, y + 1, x + 10, y + 11], fill=colour, outline="black")
            draw.text((x + 14, y), name, fill="black", font=font)
    return np.asarray(canvas)


def save_png(array, path):
    """Writes a uint8 array ([H, W] or [H, W, 3]) as PNG, atomically (local or remote)."""
    artefacts.write_bytes(encode_png(array), path)


def encode_png(array):
    """PNG bytes of a uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
