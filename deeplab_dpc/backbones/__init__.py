"""Backbones with output stride 8, 16 or 32 by atrous convolution.

Each returns a Keras model mapping an image in [-1, 1] to a dict of endpoints:
"features" (the head's input, at the output stride) and "low_level" (stride 4,
the decoder's input).
"""

from deeplab_dpc.backbones.mobilenet_v2 import mobilenet_v2
from deeplab_dpc.backbones.xception import xception

FEATURES = "features"
LOW_LEVEL = "low_level"


def build_backbone(
    model_variant, output_stride=16, depth_multiplier=1.0, batch_norm_decay=None
):
    """The backbone for `model_variant`; `batch_norm_decay` None keeps DeepLab's."""
    bn = {} if batch_norm_decay is None else {"bn_momentum": batch_norm_decay}
    if model_variant == "mobilenet_v2":
        return mobilenet_v2(output_stride, depth_multiplier, **bn)
    if model_variant in ("xception_65", "xception_71"):
        if depth_multiplier != 1.0:
            raise ValueError(
                f"{model_variant} has no depth multiplier (got {depth_multiplier})"
            )
        return xception(model_variant, output_stride, **bn)
    raise ValueError(
        f"unknown model_variant {model_variant!r}; known: mobilenet_v2, xception_65, xception_71"
    )


MODEL_VARIANTS = ("mobilenet_v2", "xception_65", "xception_71")
