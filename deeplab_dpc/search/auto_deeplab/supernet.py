"""The Auto-DeepLab supernet: relaxed cells on a trellis of resolutions (Sec. 4.1).

Layer 0 is the stem (level 0, output stride 4; its ``conv1`` output at
stride 2 serves as layer -1). Layer l = 1..L has a node at every level a
path can reach (`nas_spec.reachable_levels`: 0..min(l, levels - 1)). The node
at level s of layer l sums, over the nodes of layer l - 1 at levels s - 1, s,
s + 1 that exist, beta * RelaxedCell(edge(H^{l-1}), H^{l-2}_s; alpha)
(Eq. 6), where the edge brings H^{l-1} to level s: a ReLU -> 3x3 conv
stride 2 -> BN from the finer level, nothing from the same level, bilinear
upsampling -> ReLU -> 1x1 conv -> BN from the coarser level (Sec. 5.1).
A node at level v has B x F x 2**v output filters (the paper's B x F x s/4).
The betas of each node's outgoing edges are softmax-normalised over its
legal edges (Eq. 7); alpha is one [num_edges, num_ops] array shared by every
cell. Alpha and beta are variables of this model apart from the network
weights (`architecture_variables` / `network_variables`), initialised as
the paper: 1e-3 times a standard normal.

Each level of the last layer gets an ASPP with three branches (1x1, one 3x3
with rate 96 / stride, image pooling; B x F x 2**v filters each) and its own
logits; the logits are upsampled to the input size and summed (Sec. 4.1.2).
The search's ASPP has no dropout (the paper mentions none; DeepLab's 0.1
would only add noise to the architecture gradients).

Deviations, with reasons:

* H^{l-2}_s of a node whose layer l - 2 has no node at level s (the first
  layers; the paper does not say) is the coarsest node of layer l - 2,
  resized to level s inside the cell, as the official NASBaseCell resizes
  its H^{l-2} to H^{l-1}'s size.
* The three candidate cells of a node (one per incoming edge) have their own
  weights: Eq. 6 applies "Cell" three times and the paper does not say they
  share weights; separate cells keep every path's network a sub-network.
* The stem is the found network's three-conv stem (64, 64, 128 filters by
  default; `stem_filters` shrinks it for small searches); the paper's
  search stem is described only as two stride-2 layers.
* `recompute=True` wraps every candidate cell in `tf.recompute_grad`, which
  frees its activations after the forward pass and recomputes them for the
  backward pass (memory for time; batch-norm moving statistics are updated
  twice per step).
"""

import keras
import numpy as np
import tensorflow as tf

from deeplab_dpc.formats import auto_deeplab_spec as nas_spec
from deeplab_dpc.layers import ASPP
from deeplab_dpc.layers.auto_deeplab_ops import (
    NAS_BN_EPSILON,
    NAS_BN_MOMENTUM,
    NASConvBN,
)
from deeplab_dpc.layers.base import ConfigLayer
from deeplab_dpc.layers.conv import Logits
from deeplab_dpc.layers.resize import resize_bilinear
from deeplab_dpc.search.auto_deeplab.relaxed_cell import RelaxedCell

ARCH_INIT_STDDEV = 1e-3


def trellis(num_layers, num_levels=nas_spec.NUM_LEVELS):
    """Nodes and edges of the trellis.

    Returns (nodes, edges): nodes[l] lists the levels of layer l (layer 0 is
    the stem, [0]); edges[l] lists (source level, target level) pairs from
    layer l - 1 into layer l, for l = 1..L (edges[0] is empty).
    """
    nodes = [[0]] + nas_spec.reachable_levels(num_layers, num_levels)
    edges = [[]]
    for layer in range(1, num_layers + 1):
        edges.append(
            [
                (source, target)
                for target in nodes[layer]
                for source in nodes[layer - 1]
                if abs(source - target) <= 1
            ]
        )
    return nodes, edges


def _level_sizes(stem_size, num_levels):
    """Spatial sizes of every level: SAME stride-2 convs halve, rounding up."""
    sizes = [stem_size]
    for _ in range(1, num_levels):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class EdgeAdapter(ConfigLayer):
    """Brings H^{l-1} from `source` to `target` level (a trellis edge, Sec. 5.1)."""

    def __init__(self, filters, direction, bn_momentum=NAS_BN_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.direction = int(direction)  # target - source: +1 coarser, -1 finer
        self.bn_momentum = bn_momentum
        self.unit = None
        if self.direction == 1:
            self.unit = NASConvBN(
                self.filters, 3, strides=2, name="down", bn_momentum=bn_momentum
            )
        elif self.direction == -1:
            self.unit = NASConvBN(self.filters, 1, name="up", bn_momentum=bn_momentum)

    def build(self, input_shape):
        if self.unit is not None:
            self.unit.build((None, None, None, input_shape[-1]))

    def call(self, inputs, size=None, training=None):
        x = inputs
        if self.direction == -1:
            x = resize_bilinear(x, size)
        if self.unit is not None:
            x = self.unit(x, training=training)
        return x


class AutoDeepLabSupernet(keras.Model):
    """The search network. Call on images [B, H, W, 3] in [-1, 1]; returns logits.

    Args:
      num_classes: classes of the logits.
      num_layers: L.
      num_blocks: B.
      filter_multiplier: F (the paper searches with 8).
      num_levels: resolutions 1/4 .. 1/(4 * 2**(num_levels - 1)) (4: to 1/32).
      ops: the operator set (official names, `nas_spec.SEARCH_OPS` by default).
      stem_filters: the three stem convs' filters.
      recompute: recompute cell activations in the backward pass.
    """

    def __init__(
        self,
        num_classes,
        num_layers=nas_spec.DEFAULT_NUM_LAYERS,
        num_blocks=nas_spec.DEFAULT_NUM_BLOCKS,
        filter_multiplier=8,
        num_levels=nas_spec.NUM_LEVELS,
        ops=nas_spec.SEARCH_OPS,
        stem_filters=(64, 64, 128),
        recompute=False,
        bn_momentum=NAS_BN_MOMENTUM,
        bn_epsilon=NAS_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.num_layers = int(num_layers)
        self.num_blocks = int(num_blocks)
        self.filter_multiplier = int(filter_multiplier)
        self.num_levels = int(num_levels)
        self.op_names = [str(op) for op in ops]
        self.stem_filters = [int(f) for f in stem_filters]
        self.recompute = bool(recompute)
        if not 1 <= self.num_levels <= nas_spec.NUM_LEVELS:
            raise ValueError(f"num_levels must be 1..4, got {num_levels}")
        bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
        self.nodes, self.edges = trellis(self.num_layers, self.num_levels)

        # === Architecture variables ===
        init = keras.initializers.RandomNormal(stddev=ARCH_INIT_STDDEV)
        self.alpha = self.add_weight(
            shape=(nas_spec.num_cell_edges(self.num_blocks), len(self.op_names)),
            initializer=init,
            name="alpha",
        )
        self.beta = self.add_weight(
            shape=(self.num_layers, self.num_levels, len(nas_spec.DIRECTIONS)),
            initializer=init,
            name="beta",
        )
        mask = nas_spec.edge_mask(self.num_levels)
        self._beta_mask = np.where(mask, 0.0, -1e9).astype("float32")

        # === Network weights ===
        f0, f1, f2 = self.stem_filters
        self.stem0 = NASConvBN(
            f0, 3, strides=2, pre_activation=False, name="conv0", **bn
        )
        self.stem1 = NASConvBN(f1, 3, name="conv1", **bn)
        self.stem2 = NASConvBN(f2, 3, strides=2, name="conv2", **bn)
        self.adapters, self.cells = {}, {}
        for layer in range(1, self.num_layers + 1):
            for source, target in self.edges[layer]:
                key = f"l{layer}_{source}to{target}"
                out = self.node_filters(target)
                adapter = EdgeAdapter(
                    out, target - source, bn["bn_momentum"], name=f"edge_{key}"
                )
                cell = RelaxedCell(
                    self.block_filters(target),
                    self.num_blocks,
                    self.op_names,
                    name=f"cell_{key}",
                    **bn,
                )
                self.adapters[key], self.cells[key] = adapter, cell
                setattr(self, adapter.name, adapter)
                setattr(self, cell.name, cell)
        self.heads, self.logits = {}, {}
        for level in self.nodes[-1]:
            stride = nas_spec.level_stride(level)
            head = ASPP(
                [max(1, 96 // stride)],
                output_stride=16,  # the rate is given as is
                filters=self.node_filters(level),
                separable=False,
                dropout_rate=0.0,
                name=f"aspp_{level}",
                **bn,
            )
            logits = Logits(self.num_classes, name=f"logits_{level}")
            self.heads[level], self.logits[level] = head, logits
            setattr(self, head.name, head)
            setattr(self, logits.name, logits)

    def block_filters(self, level):
        return self.filter_multiplier * 2**level

    def node_filters(self, level):
        return self.num_blocks * self.block_filters(level)

    # --- Variables ------------------------------------------------------
    def architecture_variables(self):
        return [self.alpha, self.beta]

    def network_variables(self):
        arch = {id(v) for v in self.architecture_variables()}
        return [v for v in self.trainable_variables if id(v) not in arch]

    def stacked_kernels(self):
        """The relaxed cells' stacked full-conv kernels (weight decay)."""
        return [k for cell in self.cells.values() for k in cell.stacked_kernels()]

    def alpha_weights(self):
        return tf.nn.softmax(self.alpha, axis=-1)

    def beta_probabilities(self):
        """[L, levels, 3] softmax of beta over each node's legal outgoing edges."""
        return tf.nn.softmax(self.beta + self._beta_mask[None], axis=-1)

    # --- Build ----------------------------------------------------------
    def build(self, input_shape):
        """Builds every layer from the channel counts alone.

        Without it Keras builds the model by tracing `call` once on symbolic
        inputs: a whole extra graph construction of the supernet.
        """

        def shape(channels):
            return (None, None, None, channels)

        f0, f1, f2 = self.stem_filters
        self.stem0.build(shape(input_shape[-1]))
        self.stem1.build(shape(f0))
        self.stem2.build(shape(f1))
        channels = [{0: f1}, {0: f2}]  # layers -1 and 0
        weights = (nas_spec.num_cell_edges(self.num_blocks), len(self.op_names))
        for layer in range(1, self.num_layers + 1):
            before, two_back = channels[-1], channels[-2]
            for source, target in self.edges[layer]:
                key = f"l{layer}_{source}to{target}"
                prev = two_back.get(target, two_back[max(two_back)])
                self.adapters[key].build(shape(before[source]))
                net = before[source] if source == target else self.node_filters(target)
                self.cells[key].build([shape(net), shape(prev), weights])
            channels.append({t: self.node_filters(t) for t in self.nodes[layer]})
        for level in self.nodes[-1]:
            self.heads[level].build(shape(self.node_filters(level)))
            self.logits[level].build(shape(self.node_filters(level)))
        self.built = True

    # --- Forward --------------------------------------------------------
    def _candidate(self, key, x, prev, size, weights, training):
        adapter, cell = self.adapters[key], self.cells[key]

        def run(x, prev, weights):
            return cell(
                [adapter(x, size=size, training=training), prev, weights],
                training=training,
            )

        if self.recompute and training:
            return tf.recompute_grad(run)(x, prev, weights)
        return run(x, prev, weights)

    def call(self, images, training=None):
        h1 = self.stem1(self.stem0(images, training=training), training=training)
        h0 = self.stem2(h1, training=training)
        shape = tf.shape(h0)
        sizes = list(
            zip(
                _level_sizes(shape[1], self.num_levels),
                _level_sizes(shape[2], self.num_levels),
            )
        )
        sizes = [tf.stack(s) for s in sizes]
        weights = self.alpha_weights()
        probs = self.beta_probabilities()
        outputs = [{0: h1}, {0: h0}]  # layers -1 and 0
        for layer in range(1, self.num_layers + 1):
            before, two_back = outputs[-1], outputs[-2]
            nodes = {}
            for source, target in self.edges[layer]:
                prev = two_back.get(target, two_back[max(two_back)])
                key = f"l{layer}_{source}to{target}"
                h = self._candidate(
                    key, before[source], prev, sizes[target], weights, training
                )
                w = probs[layer - 1, source, target - source + 1]
                term = tf.cast(w, h.dtype) * h
                nodes[target] = term if target not in nodes else nodes[target] + term
            outputs.append(nodes)
        total = None
        for level, x in outputs[-1].items():
            y = self.logits[level](self.heads[level](x, training=training))
            y = resize_bilinear(y, tf.shape(images)[1:3])
            total = y if total is None else total + y
        return total

    def decoded_architecture(self):
        """The current architecture in the `auto_deeplab_spec` format (cell and Viterbi path)."""
        cell = nas_spec.decode_cell(self.alpha.numpy(), self.op_names)
        path = nas_spec.decode_network(self._full_beta())
        return {nas_spec.CELL: cell, nas_spec.NETWORK: path}

    def _full_beta(self):
        """beta padded to 4 levels (unreachable levels: no probability)."""
        beta = self.beta.numpy()
        if self.num_levels == nas_spec.NUM_LEVELS:
            return beta
        full = np.full((self.num_layers, nas_spec.NUM_LEVELS, 3), -1e9)
        full[:, : self.num_levels] = beta
        full[:, self.num_levels - 1, 2] = -1e9  # no edge beyond the last level
        return full

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "num_layers": self.num_layers,
            "num_blocks": self.num_blocks,
            "filter_multiplier": self.filter_multiplier,
            "num_levels": self.num_levels,
            "ops": self.op_names,
            "stem_filters": self.stem_filters,
            "recompute": self.recompute,
            "name": self.name,
        }
