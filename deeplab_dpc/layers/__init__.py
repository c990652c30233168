"""Keras 3 layers of DeepLab and the Dense Prediction Cell (all JSON-serialisable)."""

from deeplab_dpc.layers.aspp import ASPP, DEFAULT_ATROUS_RATES
from deeplab_dpc.layers.conv import ConvBN, Logits, SeparableConvBN, scale_rate
from deeplab_dpc.layers.decoder import Decoder
from deeplab_dpc.layers.dpc import DensePredictionCell
from deeplab_dpc.layers.pooling import PyramidPooling, pyramid_average_pool
from deeplab_dpc.layers.resize import ResizeLike, resize_bilinear

__all__ = [
    "ASPP",
    "DEFAULT_ATROUS_RATES",
    "ConvBN",
    "Decoder",
    "DensePredictionCell",
    "Logits",
    "PyramidPooling",
    "ResizeLike",
    "SeparableConvBN",
    "pyramid_average_pool",
    "resize_bilinear",
    "scale_rate",
]
