"""The search's relaxed cell (Sec. 4.1.1, as DARTS), next to the supernet.

`RelaxedCell` is the continuous relaxation (Sec. 4.1.1, as DARTS): the same
cell base (`layers.auto_deeplab_cell.CellBase`), then every block sums a mixed
operator over every one of its inputs,
each a softmax(alpha)-weighted sum of all operators. Alpha is not a weight of
the cell: the caller passes the [num_edges, num_ops] softmax weights as the
third input, so one alpha is shared by every cell of the supernet and stays
apart from the network weights. Relaxed cells always run at stride 1 (the
supernet changes resolution before the cell, Sec. 5.1).
"""

import keras
import tensorflow as tf

from deeplab_dpc.formats import auto_deeplab_spec as nas_spec
from deeplab_dpc.layers.auto_deeplab_cell import CellBase
from deeplab_dpc.layers.auto_deeplab_ops import (
    NAS_BN_EPSILON,
    NAS_BN_MOMENTUM,
    NASAtrous,
    NASSeparable,
    nas_initializer,
)


def _raw(variable):
    """The backend variable behind a Keras variable (read without Keras's wrappers)."""
    return getattr(variable, "value", variable)


def _edge_groups(num_blocks):
    """The relaxed cell's edges grouped by their input: [(source, [blocks])].

    Input 0 (H^{l-1}) and 1 (H^{l-2}) feed every block; block j's output
    (input 2 + j) feeds blocks j + 1 .. B - 1. The edges of one group share
    their input, so they are computed together.
    """
    groups = [(0, list(range(num_blocks))), (1, list(range(num_blocks)))]
    groups += [(2 + j, list(range(j + 1, num_blocks))) for j in range(num_blocks - 1)]
    return groups


class _PerEdgeInitializer:
    """Initialises a [E, *shape] stack as E independent draws of `factory()(shape)`.

    A fresh initializer per row: an unseeded Keras initializer repeats its
    values on every call.
    """

    def __init__(self, factory):
        self.factory = factory

    def __call__(self, shape, dtype=None):
        return tf.stack(
            [self.factory()(tuple(shape[1:]), dtype=dtype) for _ in range(shape[0])]
        )


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class RelaxedCell(CellBase):
    """The search cell. Inputs [H^{l-1}, H^{l-2}, softmax(alpha)]; B x filters out.

    softmax(alpha) has shape [num_edges, len(ops)], rows ordered as
    `nas_spec.edge_index` (block-major, then input 0, 1, blocks 0..i-1).

    Every edge has its own operator weights, exactly those of a `MixedOp`
    (the operators of `auto_deeplab_ops` at stride 1, `filters` in and out), but the
    weights of one operator are stacked over the cell's edges into one
    variable per role, [E, *the Keras shape] (e.g. ``separable_3x3_2_1_pointwise``
    [E, 1, 1, C, C], ``atrous_5x5_gamma`` [E, C]), rows ordered by input
    (`_edge_groups`), and the edges sharing an input are computed together:
    one depthwise conv with E' multipliers and one einsum for the separable
    convs, one conv with E' x C outputs for the atrous ones, one pooling for
    all, one fused batch norm over E' x C channels. The result is the sum of
    the cell's `MixedOp`s (the test-only per-edge reference,
    tests/auto_deeplab_reference.py) with the same weights (tests/test_auto_deeplab_layers.py),
    with B + 1 operator groups per cell instead of one `MixedOp` per edge
    (14 for B = 5) and 34 variables instead of 476: the supernet of the
    default search has ~700 variables instead of ~6800, whose creation,
    optimizer slots and graph construction were most of the search's
    start-up (issue 13; g3doc/auto_deeplab.md). `load_op` copies a
    `auto_deeplab_ops` layer's weights into one edge.
    """

    def __init__(
        self,
        filters,
        num_blocks=5,
        ops=nas_spec.SEARCH_OPS,
        bn_momentum=NAS_BN_MOMENTUM,
        bn_epsilon=NAS_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(filters, bn_momentum, bn_epsilon, **kwargs)
        self.num_blocks = int(num_blocks)
        self.op_names = [str(op) for op in ops]
        unknown = [op for op in self.op_names if op not in nas_spec.SEARCH_OPS]
        if unknown:
            raise ValueError(f"{self.name}: unknown operators {unknown}")
        self._groups = []  # (source, blocks, first row, end row)
        self._order = []  # stacked row -> alpha row
        for source, blocks in _edge_groups(self.num_blocks):
            first = len(self._order)
            self._order += [nas_spec.edge_index(b, source) for b in blocks]
            self._groups.append((source, blocks, first, len(self._order)))
        self._row = {edge: row for row, edge in enumerate(self._order)}
        self._group_sizes = [end - first for _, _, first, end in self._groups]
        self.stacked = {}

    # --- Variables --------------------------------------------------------
    def _stack(self, name, shape, initializer, trainable=True, autocast=True):
        num = len(self._order)
        var = self.add_weight(
            shape=(num, *shape),
            initializer=_PerEdgeInitializer(initializer),
            trainable=trainable,
            autocast=autocast,
            name=name,
        )
        self.stacked[name] = var
        return var

    def _bn_weights(self, prefix):
        # Not autocast: the fused batch norm takes float32 scale, offset and
        # statistics whatever the input's dtype, and under a mixed policy
        # Keras 3 hands a variable's `.value` inside `call` in the compute
        # dtype (bfloat16 / float16), which the op rejects.
        c = (self.filters,)
        ones, zeros = keras.initializers.Ones, keras.initializers.Zeros
        bn = dict(autocast=False)
        return {
            "gamma": self._stack(f"{prefix}_gamma", c, ones, **bn),
            "beta": self._stack(f"{prefix}_beta", c, zeros, **bn),
            "moving_mean": self._stack(f"{prefix}_moving_mean", c, zeros, False, **bn),
            "moving_variance": self._stack(
                f"{prefix}_moving_variance", c, ones, False, **bn
            ),
        }

    def build(self, input_shape):
        net_shape, prev_shape = input_shape[0], input_shape[1]
        self._build_base(net_shape, prev_shape)
        c = self.filters
        init = nas_initializer
        self._op_weights = {}
        for op in self.op_names:
            if op in _SEPARABLE:
                k = _SEPARABLE[op]
                units = []
                for i in (1, 2):
                    name = f"{op}_{i}"
                    units.append(
                        {
                            "depthwise": self._stack(
                                f"{name}_depthwise", (k, k, c, 1), init
                            ),
                            "pointwise": self._stack(
                                f"{name}_pointwise", (1, 1, c, c), init
                            ),
                            **self._bn_weights(name),
                        }
                    )
                self._op_weights[op] = units
            elif op in _ATROUS:
                k = _ATROUS[op]
                self._op_weights[op] = {
                    "kernel": self._stack(op, (k, k, c, c), init),
                    **self._bn_weights(op),
                }
        self.built = True

    def stacked_kernels(self):
        """The stacked conv kernels, for weight decay: the depthwise and pointwise
        kernels of the separable ops (the official NAS cell decays both,
        `regularize_depthwise=True`) and the atrous kernels; the cell base's
        convs are Keras layers, found by `training.losses.decayed_kernels`."""
        kernels = []
        for op in self.op_names:
            if op in _SEPARABLE:
                for unit in self._op_weights[op]:
                    kernels += [unit["depthwise"], unit["pointwise"]]
            elif op in _ATROUS:
                kernels.append(self._op_weights[op]["kernel"])
        return kernels

    def load_op(self, block, source, layer):
        """Copies the weights of `layer` (a stride-1 `auto_deeplab_ops` operator) into an edge."""
        row = self._row[nas_spec.edge_index(block, source)]
        if isinstance(layer, NASSeparable):
            op = f"separable_{layer.kernel_size}x{layer.kernel_size}_{layer.num_layers}"
            for i, unit in enumerate(self._op_weights[op]):
                dw, pw = layer.units[2 * i], layer.units[2 * i + 1]
                self._set_row(unit["depthwise"], row, dw.conv.kernel)
                self._set_row(unit["pointwise"], row, pw.conv.kernel)
                self._set_bn_row(unit, row, pw.bn)
        elif isinstance(layer, NASAtrous):
            op = f"atrous_{layer.kernel_size}x{layer.kernel_size}"
            weights = self._op_weights[op]
            self._set_row(weights["kernel"], row, layer.unit.conv.kernel)
            self._set_bn_row(weights, row, layer.unit.bn)
        elif layer.weights:
            raise ValueError(f"{self.name}: {layer.name} has weights no edge holds")

    @staticmethod
    def _set_row(var, row, value):
        full = var.numpy()
        full[row] = keras.ops.convert_to_numpy(value)
        var.assign(full)

    def _set_bn_row(self, weights, row, bn):
        for key in ("gamma", "beta", "moving_mean", "moving_variance"):
            self._set_row(weights[key], row, getattr(bn, key))

    # --- Forward ----------------------------------------------------------
    # `rows(var, g)` is group g's rows of a stacked variable: each variable
    # is read and split once per call (one slice per use made the graph
    # several times larger, and its construction is the search's start-up).
    def _batch_norm(self, weights, x, g, rows, training, updates):
        def get(key):
            return rows(weights[key], g, flat=True)

        args = (x, get("gamma"), get("beta"), get("moving_mean"))
        if not training:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                *args, get("moving_variance"), epsilon=self.bn_epsilon,
                is_training=False,
            )  # fmt: skip
            return y
        y, mean, var = tf.compat.v1.nn.fused_batch_norm(
            *args, get("moving_variance"), epsilon=self.bn_epsilon,
            is_training=True, exponential_avg_factor=1.0 - self.bn_momentum,
        )  # fmt: skip
        for key, value in (("moving_mean", mean), ("moving_variance", var)):
            updates.setdefault(id(weights[key]), (weights[key], []))[1].append(value)
        return y

    def _separable(self, units, rx, dims, g, rows, training, updates):
        """Both layers of a separable op for group g's edges on one input."""
        num, c = self._group_sizes[g], self.filters
        # Layer 1: shared input, one depthwise conv with `num` multipliers
        # (channel c * num + e), then a per-edge pointwise (einsum).
        dw = tf.squeeze(rows(units[0]["depthwise"], g), -1)  # [E', k, k, C]
        h = tf.nn.depthwise_conv2d(
            rx, tf.transpose(dw, [1, 2, 3, 0]), [1, 1, 1, 1], "SAME"
        )
        h = tf.reshape(h, dims + [c, num])
        pw = tf.reshape(rows(units[0]["pointwise"], g), [num, c, c])
        h = tf.reshape(tf.einsum("nhwce,ecd->nhwed", h, pw), dims + [num * c])
        h = self._batch_norm(units[0], h, g, rows, training, updates)
        # Layer 2: per-edge inputs, channels e * C + c.
        h = tf.nn.relu(h)
        dw = rows(units[1]["depthwise"], g)  # [E', k, k, C, 1]
        k = dw.shape[1]
        dw = tf.reshape(tf.transpose(dw, [1, 2, 0, 3, 4]), [k, k, num * c, 1])
        h = tf.nn.depthwise_conv2d(h, dw, [1, 1, 1, 1], "SAME")
        h = tf.reshape(h, dims + [num, c])
        pw = tf.reshape(rows(units[1]["pointwise"], g), [num, c, c])
        h = tf.reshape(tf.einsum("nhwec,ecd->nhwed", h, pw), dims + [num * c])
        return self._batch_norm(units[1], h, g, rows, training, updates)

    def _atrous(self, weights, rx, g, rows, training, updates):
        num, c = self._group_sizes[g], self.filters
        kernel = rows(weights["kernel"], g)  # [E', k, k, C, C]
        k = kernel.shape[1]
        kernel = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [k, k, c, num * c])
        # tf.nn.convolution: space-to-batch around a plain conv (CPU has no
        # dilated conv gradient)
        h = tf.nn.convolution(rx, kernel, padding="SAME", dilations=[2, 2])
        return self._batch_norm(weights, h, g, rows, training, updates)

    def _group(self, x, g, weights, rows, training, updates):
        """sum_k w[e, k] op_k(x) for group g's edges (all reading x): [N, H, W, E', C]."""
        num, c = self._group_sizes[g], self.filters
        dims = _dims(x)
        per_edge = dims + [num, c]
        rx = tf.nn.relu(x)
        w = tf.unstack(weights, axis=1)  # per operator: [E']
        total = None
        for k, op in enumerate(self.op_names):
            if op == nas_spec.ZERO:
                continue
            if op in _SEPARABLE:
                h = self._separable(
                    self._op_weights[op], rx, dims, g, rows, training, updates
                )
                h = tf.reshape(h, per_edge)
            elif op in _ATROUS:
                h = self._atrous(self._op_weights[op], rx, g, rows, training, updates)
                h = tf.reshape(h, per_edge)
            else:  # pooling and skip: the same output for every edge
                if op == nas_spec.AVG_POOL_3X3:
                    h = tf.nn.avg_pool2d(x, 3, 1, "SAME")
                elif op == nas_spec.MAX_POOL_3X3:
                    h = tf.nn.max_pool2d(x, 3, 1, "SAME")
                else:
                    h = x
                h = h[:, :, :, None, :]
            term = tf.cast(w[k][:, None], h.dtype) * h
            total = term if total is None else total + term
        if total is None:
            return tf.zeros(per_edge, x.dtype)
        return total

    def call(self, inputs, training=None):
        net, prev, weights = inputs
        states = self._base(net, prev, training)
        # alpha rows in stacked order, split by group
        weights = tf.split(tf.gather(weights, self._order), self._group_sizes, axis=0)
        cache = {}

        def rows(var, g, flat=False):
            """Group g's rows of `var`; `flat`: of `var` flattened ([E x C] vectors)."""
            if (id(var), flat) not in cache:
                value, sizes = _raw(var), self._group_sizes
                if flat:
                    value = tf.reshape(value, [-1])
                    sizes = [n * self.filters for n in sizes]
                cache[id(var), flat] = tf.split(value, sizes, axis=0)
            return cache[id(var), flat][g]

        updates = {}
        blocks = [[] for _ in range(self.num_blocks)]
        for g, (source, targets, _, _) in enumerate(self._groups):
            if source >= 2:  # block source - 2 is complete
                states.append(tf.add_n(blocks[source - 2]))
            out = self._group(states[source], g, weights[g], rows, training, updates)
            for b, h in zip(targets, tf.unstack(out, axis=3)):
                blocks[b].append(h)
        states.append(tf.add_n(blocks[-1]))
        for var, values in updates.values():
            value = tf.concat(values, 0) if len(values) > 1 else values[0]
            var.assign(tf.reshape(value, var.shape))
        return tf.concat(states[2:], axis=-1)

    def compute_output_shape(self, input_shape):
        net_shape = input_shape[0]
        return tuple(net_shape[:-1]) + (self.filters * self.num_blocks,)

    @property
    def ops(self):
        """The operators' names (the `ops` argument)."""
        return self.op_names


def _dims(x):
    """[-1, H, W] of NHWC `x`, static where known (fewer graph ops than tf.shape)."""
    shape = tf.shape(x)
    return [-1] + [x.shape[i] if x.shape[i] is not None else shape[i] for i in (1, 2)]


_SEPARABLE = {nas_spec.SEPARABLE_3X3: 3, nas_spec.SEPARABLE_5X5: 5}
_ATROUS = {nas_spec.ATROUS_3X3: 3, nas_spec.ATROUS_5X5: 5}
