"""Backbones with output stride 8, 16 or 32 by atrous convolution.

Each returns a Keras model mapping an image in [-1, 1] to a dict of endpoints:
`common.FEATURES` (the head's input, at the output stride) and
`common.LOW_LEVEL` (stride 4, the decoder's input). The model carries the
original DeepLab variable scope of the network in its `deeplab_scope`
attribute (`naming.deeplab_scope`).

A new backbone is one module here and one entry in `_BUILDERS`: the variant
list (`MODEL_VARIANTS`, the `--model_variant` choices of every command line)
is the keys of that table. Importing this package loads no TensorFlow (the
builder module is imported when a backbone is built), so command lines can
list the variants and fail on a bad flag in a second.
"""

import importlib

# model_variant -> (module, function(model_variant, output_stride,
# depth_multiplier, bn kwargs) -> Keras model).
_BUILDERS = {
    "mobilenet_v2": ("deeplab_dpc.backbones.mobilenet_v2", "build"),
    "xception_65": ("deeplab_dpc.backbones.xception", "build"),
    "xception_71": ("deeplab_dpc.backbones.xception", "build"),
    "nas_hnasnet": ("deeplab_dpc.backbones.auto_deeplab", "build"),
}
# Variants taking the NAS options (`nas_stem_output_num_conv_filters`,
# `nas_architecture`) as the builder's `num_conv_filters`, `architecture`.
NAS_VARIANTS = ("nas_hnasnet",)
MODEL_VARIANTS = tuple(_BUILDERS)


def build_backbone(
    model_variant,
    output_stride=16,
    depth_multiplier=1.0,
    batch_norm_decay=None,
    **options,
):
    """The backbone for `model_variant`; `batch_norm_decay` None keeps DeepLab's.

    `options` are a variant's own arguments (the NAS variants' F and
    architecture), passed to its builder.
    """
    if model_variant not in _BUILDERS:
        raise ValueError(
            f"unknown model_variant {model_variant!r}; known: {', '.join(MODEL_VARIANTS)}"
        )
    bn = {} if batch_norm_decay is None else {"bn_momentum": batch_norm_decay}
    module, function = _BUILDERS[model_variant]
    build = getattr(importlib.import_module(module), function)
    return build(model_variant, output_stride, depth_multiplier, bn, **options)
