"""Backbones with output stride 8, 16 or 32 by atrous convolution.

Each returns a Keras model mapping an image in [-1, 1] to a dict of endpoints:
`common.FEATURES` (the head's input, at the output stride) and
`common.LOW_LEVEL` (stride 4, the decoder's input). The model carries the
original DeepLab variable scope of the network in its `deeplab_scope`
attribute (`naming.deeplab_scope`).

A new backbone is one module here and one entry in `_BUILDERS`: the variant
list (`MODEL_VARIANTS`, the `--model_variant` choices of every command line)
is the keys of that table.
"""

from deeplab_dpc.backbones.mobilenet_v2 import mobilenet_v2
from deeplab_dpc.backbones.xception import xception
from deeplab_dpc.common import FEATURES, LOW_LEVEL  # noqa: F401  (the endpoint keys)


def _mobilenet_v2(model_variant, output_stride, depth_multiplier, bn):
    return mobilenet_v2(output_stride, depth_multiplier, **bn)


def _xception(model_variant, output_stride, depth_multiplier, bn):
    if depth_multiplier != 1.0:
        raise ValueError(
            f"{model_variant} has no depth multiplier (got {depth_multiplier})"
        )
    return xception(model_variant, output_stride, **bn)


# model_variant -> builder(model_variant, output_stride, depth_multiplier, bn kwargs)
_BUILDERS = {
    "mobilenet_v2": _mobilenet_v2,
    "xception_65": _xception,
    "xception_71": _xception,
}
MODEL_VARIANTS = tuple(_BUILDERS)


def build_backbone(
    model_variant, output_stride=16, depth_multiplier=1.0, batch_norm_decay=None
):
    """The backbone for `model_variant`; `batch_norm_decay` None keeps DeepLab's."""
    if model_variant not in _BUILDERS:
        raise ValueError(
            f"unknown model_variant {model_variant!r}; known: {', '.join(MODEL_VARIANTS)}"
        )
    bn = {} if batch_norm_decay is None else {"bn_momentum": batch_norm_decay}
    return _BUILDERS[model_variant](model_variant, output_stride, depth_multiplier, bn)
