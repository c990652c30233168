"""Output stride by atrous convolution: the running-stride tracker of DeepLab.

When the next layer's stride would take the features past `output_stride`,
that layer runs with stride 1 and every later layer's atrous rate is
multiplied by the stride it skipped (slim's `mobilenet_base` and
`stack_blocks_dense` do exactly this). The skipping layer itself keeps the
current rate.
"""

from deeplab_dpc.core import common


class StrideTracker:
    """Hands out (stride, rate) for each layer in order."""

    def __init__(self, output_stride):
        if output_stride not in common.OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.output_stride = output_stride
        self.current_stride = 1
        self.rate = 1

    def next(self, stride):
        """Returns (stride, rate) for a layer that nominally has `stride`."""
        if self.current_stride == self.output_stride:
            layer = (1, self.rate)
            self.rate *= stride
            return layer
        self.current_stride *= stride
        return (stride, 1)
