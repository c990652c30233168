"""Layer paths: one naming for model statistics, weight import and partial loading.

A *unit* is a layer that directly owns a convolution (Keras Conv2D or
DepthwiseConv2D) and optionally its BatchNormalization: `ConvBN`,
`PyramidPooling`, `Logits`. Its path joins the names of the layers that
contain it, below the model, with "/", e.g. `head/branch0/depthwise`,
`backbone/expanded_conv_3/expand`, `logits/semantic` (the conv's own name is
appended unless it is the generic `conv` / `depthwise_conv`).

`deeplab_scope(path, ...)` maps a path to the original DeepLab (TF1) variable
scope, e.g. `head/branch0/depthwise` -> `dense_prediction_cell/branch0_depthwise`
and `backbone/expanded_conv_3/expand` -> `MobilenetV2/expanded_conv_3/expand`.
"""

import collections

import keras

Unit = collections.namedtuple("Unit", ["path", "layer", "conv", "bn"])

_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
_GENERIC_CONV_NAMES = ("conv", "depthwise_conv")


def _children(layer):
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    return list(layer._flatten_layers(include_self=False, recursive=False))


def iter_units(model):
    """Yields `Unit`s of a model in call order (depth first), once each."""
    seen = set()

    def walk(layer, prefix):
        children = _children(layer)
        convs = [c for c in children if isinstance(c, _CONV_TYPES)]
        bns = [c for c in children if isinstance(c, keras.layers.BatchNormalization)]
        if convs:
            for conv in convs:
                path = (
                    prefix
                    if conv.name in _GENERIC_CONV_NAMES
                    else f"{prefix}/{conv.name}"
                )
                yield Unit(path, layer, conv, bns[0] if bns else None)
            return
        for child in children:
            if id(child) in seen or isinstance(child, keras.layers.InputLayer):
                continue
            seen.add(id(child))
            child_prefix = child.name if not prefix else f"{prefix}/{child.name}"
            yield from walk(child, child_prefix)

    yield from walk(model, "")


def top_level(path):
    """`backbone`, `head`, `decoder` or `logits` for a unit path."""
    return path.split("/", 1)[0]


def deeplab_scope(model, path, model_variant, head):
    """The original DeepLab variable scope for the unit at `path` of `model`.

    The tables live beside the layers they name: a layer's own scope is its
    `deeplab_scope` attribute where its Keras name cannot be DeepLab's (Keras
    forbids "/"), and the backbone model's `deeplab_scope` is the network's.
    """
    parts = path.split("/")
    module, rest = parts[0], parts[1:]
    if module == "backbone":
        backbone = model.get_layer("backbone")
        layer = backbone.get_layer(rest[0])
        rest = [getattr(layer, "deeplab_scope", None) or rest[0]] + rest[1:]
        prefix = getattr(backbone, "deeplab_scope", None)
        if prefix is None:  # e.g. a model deserialised from JSON
            raise ValueError(
                "the backbone carries no deeplab_scope: build the model with "
                "deeplab_dpc.modeling.model.build_model"
            )
    elif module == "head":
        prefix = "dense_prediction_cell" if head == "dpc" else ""
    elif module == "decoder":
        prefix = "decoder"
    else:
        prefix = "logits"
    # DeepLab's split_separable_conv2d names its parts `<scope>_depthwise` /
    # `<scope>_pointwise`; inverted residuals keep `depthwise` as a sub-scope.
    if (
        rest
        and rest[-1] in ("depthwise", "pointwise")
        and not (module == "backbone" and model_variant == "mobilenet_v2")
    ):
        rest = rest[:-2] + [f"{rest[-2]}_{rest[-1]}"]
    return "/".join(p for p in [prefix] + rest if p)
