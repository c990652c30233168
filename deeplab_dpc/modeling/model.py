"""Builds DeepLab models with a DPC or ASPP head from one plain config dict.

`build_deeplab(model_variant, num_classes, head="dpc" | "aspp", ...)` returns a
functional Keras model: image in [-1, 1] of any size -> logits resized to the
input size with bilinear interpolation, align_corners=True (as DeepLab; sizes
k * 32 + 1 such as 513 and 769 align exactly). The same arguments as a dict
(`model_config(...)`) are what every checkpoint, export and search result
stores, so that `build_model(config)` rebuilds the exact architecture.

Top-level layers: `backbone` (a nested model), `head` (DensePredictionCell or
ASPP), optional `decoder`, `logits` (`logits/semantic`), and `upsample`.
"""

import keras

from deeplab_dpc.backbones import MODEL_VARIANTS, NAS_VARIANTS, build_backbone
from deeplab_dpc.backbones.auto_deeplab_network import STEM_FILTERS, check_stem_filters
from deeplab_dpc.core import artefacts, common, errors
from deeplab_dpc.formats import auto_deeplab_spec as nas_spec
from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.layers import ASPP, DEFAULT_ATROUS_RATES, Decoder, DensePredictionCell
from deeplab_dpc.layers.conv import Logits
from deeplab_dpc.layers.resize import ResizeLike

HEADS = ("dpc", "aspp")
# 2: every config holds the backbone options `nas_stem_output_num_conv_filters`,
# `nas_stem_filters` and `nas_architecture` (version 1 wrote the first and
# the last for the NAS variants only, and had no `nas_stem_filters`);
# `load_config` upgrades older files (`upgrade_config`).
CONFIG_VERSION = 2
# Backbone options: config field -> the `build_backbone` argument it feeds,
# for the variants that take them (`backbones.NAS_VARIANTS`).
BACKBONE_OPTIONS = {
    "nas_stem_output_num_conv_filters": "num_conv_filters",
    "nas_stem_filters": "stem_filters",
    "nas_architecture": "architecture",
}


class ModelConfigError(ValueError):
    """A model configuration that cannot be built; the message names the field."""


def check_output_stride(output_stride):
    """ModelConfigError unless `output_stride` is 8, 16 or 32."""
    if output_stride not in common.OUTPUT_STRIDES:
        raise ModelConfigError(
            f"output_stride: must be 8, 16 or 32, got {output_stride}"
        )


def _check_number(name, value, low, high, low_open=False):
    """ModelConfigError unless `value` is a finite number in [low, high] (or (low, high])."""
    errors.check_range(name, value, low, high, low_open, ModelConfigError)


def model_config(
    model_variant="mobilenet_v2",
    num_classes=21,
    head="dpc",
    dpc_spec=None,
    output_stride=16,
    atrous_rates=None,
    decoder_output_stride=None,
    depth_multiplier=1.0,
    batch_norm_decay=None,
    upsample_logits=True,
    allow_outside_space=False,
    dataset=None,
    nas_stem_output_num_conv_filters=20,
    nas_architecture=None,
    nas_stem_filters=STEM_FILTERS,
    aspp_with_separable_conv=True,
    decoder_use_separable_conv=True,
):
    """Validates the model options and returns them as a JSON-ready dict.

    Args:
      model_variant: mobilenet_v2, xception_65 or xception_71.
      num_classes: classes of the logits layer.
      head: "dpc" (needs `dpc_spec`, a branch list or a JSON file path) or "aspp".
      output_stride: 8, 16 or 32.
      atrous_rates: ASPP rates at output stride 16; None means (6, 12, 18) and
        an empty list ASPP-lite.
      decoder_output_stride: None (no decoder) or 4.
      depth_multiplier: MobileNetV2 width multiplier.
      batch_norm_decay: overrides every batch-norm decay (None: DeepLab's).
      upsample_logits: resize logits to the input size inside the model.
      dataset: name of the dataset the weights are trained on; recorded so a
        checkpoint explains itself, not used to build the model.
      nas_stem_output_num_conv_filters: F of the NAS variants (DeepLab's flag).
      nas_architecture: a NAS variant's architecture, an `auto_deeplab_spec` dict or
        JSON file (recorded as the dict); None is the paper's hnasnet.
      nas_stem_filters: the NAS variants' three stem conv filters; the
        paper's (64, 64, 128) by default (empty too). Smaller is a deviation
        for small budgets (g3doc/auto_deeplab.md).
      aspp_with_separable_conv: the ASPP's 3x3 atrous convs separable
        (DeepLab's flag and default); False: full convs (Auto-DeepLab's Table 2).
      decoder_use_separable_conv: the same for the decoder's two 3x3 convs.
    """
    if model_variant not in MODEL_VARIANTS:
        raise ModelConfigError(
            f"model_variant: unknown {model_variant!r}; known: {', '.join(MODEL_VARIANTS)}"
        )
    if head not in HEADS:
        raise ModelConfigError(f"head: unknown {head!r}; known: {', '.join(HEADS)}")
    check_output_stride(output_stride)
    if decoder_output_stride not in (None, 4):
        raise ModelConfigError(
            f"decoder_output_stride: must be None or 4, got {decoder_output_stride}"
        )
    if int(num_classes) < 1:
        raise ModelConfigError(f"num_classes: must be positive, got {num_classes}")
    _check_number("depth_multiplier", depth_multiplier, 0.0, 4.0, low_open=True)
    if batch_norm_decay is not None:
        _check_number("batch_norm_decay", batch_norm_decay, 0.0, 1.0)
    for rate in atrous_rates or ():
        if int(rate) < 1:
            raise ModelConfigError(f"atrous_rates: must be positive, got {rate}")
    if head == "dpc":
        if dpc_spec is None:
            raise ModelConfigError(
                "dpc_spec: head 'dpc' needs a spec (a JSON file or branch list)"
            )
        if isinstance(dpc_spec, str):
            dpc_spec = spec_lib.load_spec(
                dpc_spec, allow_outside_space=allow_outside_space
            )
        dpc_spec = spec_lib.parse_spec(
            dpc_spec, allow_outside_space=allow_outside_space
        )
    elif dpc_spec is not None:
        raise ModelConfigError(
            "dpc_spec: given, but head is 'aspp'; use head='dpc' or drop the spec"
        )
    rates = list(DEFAULT_ATROUS_RATES if atrous_rates is None else atrous_rates)
    if int(nas_stem_output_num_conv_filters) < 1:
        raise ModelConfigError(
            "nas_stem_output_num_conv_filters: must be positive, got "
            f"{nas_stem_output_num_conv_filters}"
        )
    try:  # empty: the paper's
        stem = list(
            check_stem_filters(nas_stem_filters or STEM_FILTERS, "nas_stem_filters")
        )
    except ValueError as e:
        raise ModelConfigError(str(e)) from None
    if model_variant not in NAS_VARIANTS and tuple(stem) != STEM_FILTERS:
        raise ModelConfigError(
            f"nas_stem_filters: given, but model_variant is {model_variant!r}"
        )
    try:
        if isinstance(nas_architecture, str):
            nas_architecture = nas_spec.load_architecture(nas_architecture)
        if nas_architecture is not None:
            nas_architecture = nas_spec.parse_architecture(nas_architecture)
    except ValueError as e:
        raise ModelConfigError(f"nas_architecture: {e}") from e
    if nas_architecture is not None and model_variant not in NAS_VARIANTS:
        raise ModelConfigError(
            f"nas_architecture: given, but model_variant is {model_variant!r}"
        )
    return {
        "version": CONFIG_VERSION,
        "model_variant": model_variant,
        "num_classes": int(num_classes),
        "head": head,
        "dpc_spec": dpc_spec,
        "output_stride": int(output_stride),
        "atrous_rates": [int(r) for r in rates] if head == "aspp" else None,
        "decoder_output_stride": decoder_output_stride,
        "depth_multiplier": float(depth_multiplier),
        "batch_norm_decay": batch_norm_decay,
        "upsample_logits": bool(upsample_logits),
        "allow_outside_space": bool(allow_outside_space),
        "dataset": None if dataset is None else str(dataset),
        "aspp_with_separable_conv": bool(aspp_with_separable_conv),
        "decoder_use_separable_conv": bool(decoder_use_separable_conv),
        "nas_stem_output_num_conv_filters": int(nas_stem_output_num_conv_filters),
        "nas_architecture": nas_architecture,
        "nas_stem_filters": stem,
    }


def build_head(config):
    """The head layer (named `head`) of a model config."""
    bn = {}
    if config["batch_norm_decay"] is not None:
        bn["bn_momentum"] = config["batch_norm_decay"]
    if config["head"] == "dpc":
        return DensePredictionCell(
            config["dpc_spec"],
            output_stride=config["output_stride"],
            allow_outside_space=config["allow_outside_space"],
            name=common.HEAD,
            **bn,
        )
    return ASPP(
        config["atrous_rates"],
        output_stride=config["output_stride"],
        separable=config.get("aspp_with_separable_conv", True),
        name=common.HEAD,
        **bn,
    )


def build_model(config):
    """Builds the Keras model described by a `model_config` dict."""
    options = {}
    if config["model_variant"] in NAS_VARIANTS:
        options = {arg: config[field] for field, arg in BACKBONE_OPTIONS.items()}
    backbone = build_backbone(
        config["model_variant"],
        config["output_stride"],
        config["depth_multiplier"],
        config["batch_norm_decay"],
        **options,
    )
    image = keras.Input(shape=(None, None, 3), name=common.IMAGE)
    endpoints = backbone(image)
    x = build_head(config)(endpoints[common.FEATURES])
    if config["decoder_output_stride"] is not None:
        bn = {}
        if config["batch_norm_decay"] is not None:
            bn["bn_momentum"] = config["batch_norm_decay"]
        x = Decoder(
            separable=config.get("decoder_use_separable_conv", True),
            name=common.DECODER,
            **bn,
        )([x, endpoints[common.LOW_LEVEL]])
    logits = Logits(config["num_classes"], name=common.LOGITS)(x)
    if config["upsample_logits"]:
        logits = ResizeLike(name="upsample")([logits, image])
    return keras.Model(image, {common.SEMANTIC_LOGITS: logits}, name="deeplab")


def build_deeplab(model_variant, num_classes, head="dpc", **kwargs):
    """Convenience: `build_model(model_config(...))`; see `model_config` for the arguments."""
    return build_model(model_config(model_variant, num_classes, head, **kwargs))


def save_config(config, path):
    """Writes a model config as JSON atomically (see `artefacts.write_json`)."""
    artefacts.write_json(config, path)


def upgrade_config(raw, source="model config"):
    """A stored config (any version up to `CONFIG_VERSION`) as the current fields.

    Version 1 (and files without a version) had the NAS options only for the
    NAS variants: the others get their defaults, which `model_config` fills.
    A newer version than this code knows is refused (ModelConfigError).
    """
    version = raw.get("version", 1)
    if not isinstance(version, int) or not 1 <= version <= CONFIG_VERSION:
        raise ModelConfigError(
            f"{source}: version {version!r} is not one this code reads "
            f"(1 to {CONFIG_VERSION}); update deeplab_dpc"
        )
    return {k: v for k, v in raw.items() if k != "version"}


def load_config(path):
    """Reads a model config JSON, upgraded and validated by re-running `model_config`."""
    raw = artefacts.read_json(path, ModelConfigError, what="model config")
    fields = upgrade_config(raw, path)
    try:
        return model_config(**fields)
    except TypeError as e:
        raise ModelConfigError(f"{path}: {e}") from e
