"""`--model_variant=nas_hnasnet`: the Auto-DeepLab network as a DeepLab backbone.

`build` wraps `auto_deeplab_network.nas_network` as the other backbones: named
`common.BACKBONE`, with DeepLab's variable scope (`hnasnet`, the official
`feature_extractor` name of `nas_hnasnet`). `num_conv_filters` is F
(`--nas_stem_output_num_conv_filters`), `stem_filters` the stem's three
convs (`--nas_stem_filters`; the paper's 64, 64, 128) and `architecture` a found
architecture (`--nas_architecture`, an `auto_deeplab_spec` JSON file; None: the
paper's). The features come at the stride of the path's last level (8 for
the paper's path), whatever `output_stride` says: the path fixes it, and
`output_stride` only scales the ASPP rates (pass the network's stride to get
the rates as given).
"""

from deeplab_dpc.backbones.auto_deeplab_network import (
    DEFAULT_NUM_CONV_FILTERS,
    STEM_FILTERS,
    nas_network,
)
from deeplab_dpc.core import common

DEEPLAB_SCOPE = "hnasnet"


def build(
    model_variant,
    output_stride,
    depth_multiplier,
    bn,
    num_conv_filters=DEFAULT_NUM_CONV_FILTERS,
    architecture=None,
    stem_filters=STEM_FILTERS,
):
    """The `backbones.build_backbone` entry of this network."""
    del model_variant, output_stride, depth_multiplier
    model = nas_network(
        architecture, num_conv_filters, stem_filters, name=common.BACKBONE, **bn
    )
    model.deeplab_scope = DEEPLAB_SCOPE
    return model
