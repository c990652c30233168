"""The Auto-DeepLab network (`nas_hnasnet`) and any found one, as a backbone.

As the official `_build_nas_base` (`research/deeplab/core/nas_network.py`):

* stem: three 3x3 convs with 64, 64 and 128 filters, stride 2 in the first
  and third (``conv0`` -> BN -> ReLU -> ``conv1`` -> BN -> ReLU -> ``conv2``
  -> BN; the paper's Sec. 5.2 stem); its ``conv1`` and ``conv2`` outputs are
  H^{-1} and H^{0} of the first cell. The strided ``conv0`` and ``conv2``
  pad explicitly (1 pixel each side) and run VALID, as the last official
  revision's `resnet_utils.conv2d_same` (see `layers.auto_deeplab_ops`; SAME would
  shift the windows by one pixel on even sizes);
* then one `NASCell` per entry of the path: filter scaling starts at 1 and
  doubles when the path goes one level coarser (the cell strides by 2) and
  halves when it goes one level finer (H^{l-1} is first upsampled by
  ``scale_dimension(size, 2)``, bilinear, align_corners); a cell at level v
  has ``int(F * 2**v)`` filters per block and 5 blocks' worth of output;
* features: ReLU of the last cell (output stride 4 * 2**path[-1], 8 for
  `hnasnet`); low-level features for the decoder: the last cell of the first
  run of level-0 cells (``Cell_2`` for `hnasnet`, as the official
  `networks_to_feature_maps`), or the stem when the path starts at level 1
  (as the official `nas_pnasnet` uses ``Stem``).

F is DeepLab's ``nas_stem_output_num_conv_filters`` (default 20;
Auto-DeepLab-S/M/L use 20/32/48). Batch norm: decay 0.9997, epsilon 1e-3.
The output stride is the path's; the network has no atrous rates to adjust,
so an `output_stride` argument is not taken (the official `hnasnet` ignores
its own).
"""

import keras

from deeplab_dpc.formats import auto_deeplab_spec as nas_spec
from deeplab_dpc.layers.auto_deeplab_cell import NASCell
from deeplab_dpc.layers.auto_deeplab_ops import (
    NAS_BN_EPSILON,
    NAS_BN_MOMENTUM,
    NASConvBN,
    scale_resize,
)
from deeplab_dpc.layers.base import ConfigLayer

FEATURES = "features"  # the keys of deeplab_dpc.backbones
LOW_LEVEL = "low_level"
DEFAULT_NUM_CONV_FILTERS = 20
STEM_FILTERS = (64, 64, 128)


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class ScaleResize(ConfigLayer):
    """Bilinear resize by `scale` with DeepLab's `scale_dimension` sizes."""

    def __init__(self, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        return scale_resize(inputs, self.scale)

    def compute_output_shape(self, input_shape):
        def size(n):
            return None if n is None else int((n - 1) * self.scale + 1)

        return (
            input_shape[0],
            size(input_shape[1]),
            size(input_shape[2]),
            input_shape[3],
        )


def network_output_stride(path):
    """Output stride of the features of a path: 4 * 2**path[-1]."""
    return nas_spec.level_stride(path[-1])


def low_level_cell(path):
    """Index of the cell giving stride-4 decoder features, or None for the stem."""
    index = None
    for i, level in enumerate(path):
        if level != 0:
            break
        index = i
    return index


def check_stem_filters(stem_filters, name="stem_filters"):
    """`stem_filters` as a tuple of three positive ints; ValueError naming `name` otherwise."""
    values = tuple(stem_filters)
    if len(values) != 3 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values
    ):
        raise ValueError(f"{name}: needs three positive integers, got {list(values)}")
    return values


def nas_network(
    architecture=None,
    num_conv_filters=DEFAULT_NUM_CONV_FILTERS,
    stem_filters=STEM_FILTERS,
    drop_path_keep_prob=1.0,
    input_shape=(None, None, 3),
    bn_momentum=NAS_BN_MOMENTUM,
    bn_epsilon=NAS_BN_EPSILON,
    name="hnasnet",
):
    """The found network as a Keras model: image -> {"features", "low_level"}.

    Args:
      architecture: an `auto_deeplab_spec` architecture (dict or JSON file path);
        None is the paper's `nas_spec.HNASNET`.
      num_conv_filters: F, DeepLab's `nas_stem_output_num_conv_filters`.
      stem_filters: the three stem convs' filters; the paper's (64, 64, 128)
        by default. Smaller stems are a deviation for small budgets: at small
        F the stride-2 and stride-4 stem convs cost more than the cells
        (g3doc/auto_deeplab.md, "The found network as a DeepLab model").
      drop_path_keep_prob: official drop path (1.0: off), see `NASCell`.
      input_shape: the image shape without batch.
    """
    if architecture is None:
        architecture = nas_spec.HNASNET
    elif isinstance(architecture, str):
        architecture = nas_spec.load_architecture(architecture)
    architecture = nas_spec.parse_architecture(architecture)
    if int(num_conv_filters) < 1:
        raise ValueError(f"num_conv_filters: must be positive, got {num_conv_filters}")
    stem_filters = check_stem_filters(stem_filters)
    path, cell = architecture[nas_spec.NETWORK], architecture[nas_spec.CELL]
    bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)

    # === Stem ===
    image = keras.Input(shape=input_shape, name="image")
    x = NASConvBN(
        stem_filters[0], 3, strides=2, pre_activation=False, name="conv0", **bn
    )(image)
    x = NASConvBN(stem_filters[1], 3, name="conv1", **bn)(x)
    outputs = [x]
    x = NASConvBN(stem_filters[2], 3, strides=2, name="conv2", **bn)(x)
    outputs.append(x)

    # === Cells along the path ===
    low_index = low_level_cell(path)
    low_level = outputs[-1] if low_index is None else None
    previous = 0
    for cell_num, level in enumerate(path):
        strides = 1
        if level == previous + 1:
            strides = 2
        elif level == previous - 1:
            x = ScaleResize(2.0, name=f"upsample_{cell_num}")(x)
        x = NASCell(
            int(num_conv_filters * 2**level),
            cell,
            strides=strides,
            drop_path_keep_prob=drop_path_keep_prob,
            cell_num=cell_num,
            total_num_cells=len(path),
            name=f"cell_{cell_num}",
            **bn,
        )([x, outputs[-2]])
        outputs.append(x)
        if cell_num == low_index:
            low_level = x
        previous = level
    features = keras.layers.ReLU(name="features_relu")(x)
    return keras.Model(image, {FEATURES: features, LOW_LEVEL: low_level}, name=name)
