"""TFLite export: a fixed input size, ArgMax inside, TFLite builtin ops only.

The interface follows DeepLab's released TFLite models (for instance
`deeplabv3_257_mv_gpu.tflite`, input `sub_7`): one float32 image
[1, H, W, 3] already normalised to [-1, 1] (x / 127.5 - 1), H x W the
`--crop_size`. A smaller image is padded bottom/right with 0.0 (the
normalised mean pixel), as the SavedModel does inside its graph;
`prepare_input` does this (and downscales larger images to fit).

Deviations from DeepLab's TFLite files, all deliberate:

* The output is `SemanticPredictions`, int32 [1, H, W] class ids (ArgMax in
  the graph), not logits: an app needs no pass over H x W x classes floats.
  With one scale and no flips the ArgMax is taken over the logits (the
  softmax does not change it); otherwise over `predict_probabilities`.
* The function is frozen (variables to constants) before conversion. With
  Keras 3 variables, TF 2.21's converter otherwise keeps every weight as a
  resource variable (VAR_HANDLE / READ_VARIABLE) that is never initialised
  in the file, and batch norm is not folded.
* Conversion allows builtin ops only (no Flex / Select TF ops), so a file
  that converts runs with the stock TFLite runtime.
* `quantize`: `float16` stores weights as float16; `int8` quantises weights
  and activations, calibrated on representative images (`--dataset` through
  the eval input pipeline, or files from a glob). Ops without an int8 kernel
  stay float; the input and output types do not change.
* The export config is written beside the file as `<file>.json` (TFLite has
  no place for it that the stock Python interpreter can read).
"""

import json
import logging

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

from deeplab_dpc.core import artefacts, common
from deeplab_dpc.data import preprocess
from deeplab_dpc.modeling import inference

TFLITE_INPUT = "normalized_image"
QUANTIZE_MODES = ("none", "float16", "int8")
DEFAULT_NUM_REPRESENTATIVE = 100


def sidecar_path(path):
    """Where the export config of a TFLite file lives."""
    return path + ".json"


def check_output_path(path):
    if artefacts.isdir(path):
        raise ValueError(f"tflite_output {path} is a directory; give a file name")


def parse_crop_size(crop_size):
    """(h, w) from an int, a pair or strings such as ["513", "513"]."""
    values = [crop_size] if isinstance(crop_size, int | str) else list(crop_size)
    try:
        values = [int(v) for v in values]
    except ValueError:
        raise ValueError(f"crop_size must be integers, got {crop_size}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"crop_size must be h,w with positive sizes, got {crop_size}")
    return tuple(values)


def fit_normalized(image, crop_size):
    """Normalised [H, W, 3] -> ([1, crop_h, crop_w, 3], (h, w) of the image in it).

    Downscales (keeping the aspect ratio) when the image is larger than the
    crop, then pads bottom/right with 0.0, the normalised mean pixel.
    """
    crop_h, crop_w = crop_size
    h, w = int(image.shape[0]), int(image.shape[1])
    scale = min(1.0, crop_h / h, crop_w / w)
    if scale < 1.0:
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
        image = tf.image.resize(image, [h, w], antialias=True)
    padded = tf.pad(image, [[0, crop_h - h], [0, crop_w - w], [0, 0]])
    return padded[tf.newaxis], (h, w)


def prepare_input(image, crop_size):
    """uint8 [H, W, 3] -> the TFLite input and the (h, w) to crop predictions to."""
    return fit_normalized(preprocess.normalize_image(image), crop_size)


def tflite_function(model, crop_size, scales=(1.0,), add_flipped_images=False):
    """The concrete function that is converted: normalised image -> class ids."""
    crop_h, crop_w = crop_size
    spec = tf.TensorSpec([1, crop_h, crop_w, 3], tf.float32, TFLITE_INPUT)
    single = [float(s) for s in scales] == [1.0] and not add_flipped_images

    @tf.function(input_signature=[spec])
    def predict(normalized_image):
        if single:
            scores = model(normalized_image, training=False)[common.SEMANTIC_LOGITS]
        else:
            scores = inference.predict_probabilities(
                model, normalized_image, scales, add_flipped_images
            )
        labels = tf.argmax(scores, axis=-1, output_type=tf.int32)
        return {"SemanticPredictions": labels}

    return predict.get_concrete_function()


def representative_from_files(patterns, crop_size, count):
    """Yields TFLite inputs from image files matching comma-separated globs."""
    files = []
    for pattern in str(patterns).split(","):
        files += sorted(tf.io.gfile.glob(pattern.strip()))
    if not files:
        raise FileNotFoundError(f"representative_images: no files match {patterns}")
    for path in files[:count]:
        image = tf.io.decode_image(
            tf.io.read_file(path), channels=3, expand_animations=False
        )
        yield prepare_input(image, crop_size)[0]


def representative_from_dataset(dataset, dataset_dir, split, crop_size, count):
    """Yields TFLite inputs from the eval input pipeline of a registered dataset."""
    from deeplab_dpc.data import pipeline

    samples = pipeline.build_dataset(
        dataset_dir, split, dataset, is_training=False, batch_size=1
    )
    for sample in samples.take(count):
        h, w = int(sample[common.HEIGHT][0]), int(sample[common.WIDTH][0])
        yield fit_normalized(sample[common.IMAGE][0, :h, :w], crop_size)[0]


def _representative(crop_size, representative_images, dataset, dataset_dir, split, n):
    if representative_images:
        return lambda: (
            [x] for x in representative_from_files(representative_images, crop_size, n)
        )
    if dataset:
        return lambda: (
            [x]
            for x in representative_from_dataset(
                dataset, dataset_dir, split, crop_size, n
            )
        )
    raise ValueError(
        "quantize=int8 needs representative data: give dataset or representative_images"
    )


class _TrackableObjWarningFilter(logging.Filter):
    def filter(self, record):
        return "providing the trackable_obj argument" not in record.getMessage()


class _no_trackable_obj_warning:
    """Drops TF's "Please consider providing the trackable_obj" warning (absl logging).

    `from_concrete_functions` asks for the Keras model to keep its variables
    alive; the function converted here is frozen (variables folded into
    constants), so there is nothing to keep alive and the warning is noise.
    """

    def __enter__(self):
        self.filter = _TrackableObjWarningFilter()
        logging.getLogger("absl").addFilter(self.filter)

    def __exit__(self, *exc):
        logging.getLogger("absl").removeFilter(self.filter)


def check_options(options, dataset=None):
    """Validates TFLite options up front (before any slow work); returns them."""
    options = dict(options or {})
    options["crop_size"] = parse_crop_size(options.get("crop_size", (513, 513)))
    quantize = options.get("quantize", "none")
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if quantize == "int8" and not (options.get("representative_images") or dataset):
        raise ValueError(
            "quantize=int8 needs representative data: give dataset or "
            "representative_images"
        )
    return options


def convert(
    model,
    config,
    crop_size=(513, 513),
    quantize="none",
    representative_images=None,
    dataset=None,
    dataset_dir=None,
    representative_split="val",
    num_representative=DEFAULT_NUM_REPRESENTATIVE,
):
    """Converts `model` with the export `config`'s scales; returns (bytes, info)."""
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    crop_size = parse_crop_size(crop_size)
    scales, flip = config["inference_scales"], config["add_flipped_images"]
    frozen = convert_variables_to_constants_v2(
        tflite_function(model, crop_size, scales, flip)
    )
    with _no_trackable_obj_warning():  # the frozen function has no variables
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = _representative(
            crop_size,
            representative_images,
            dataset,
            dataset_dir,
            representative_split,
            int(num_representative),
        )
    info = {
        "crop_size": list(crop_size),
        "quantize": quantize,
        "input": {
            TFLITE_INPUT: f"float32 [1, {crop_size[0]}, {crop_size[1]}, 3] in "
            "[-1, 1]; pad bottom/right with 0.0"
        },
        "output": {"SemanticPredictions": "int32 [1, height, width]: class ids"},
    }
    return converter.convert(), info


def write(content, config, info, path):
    """Writes the TFLite file and its `<file>.json` config, each atomically."""
    artefacts.write_bytes(content, path)
    artefacts.write_json({**config, "tflite": info}, sidecar_path(path))


def read_config(path):
    """The export config beside a TFLite file, or None when there is none."""
    sidecar = sidecar_path(path)
    if not artefacts.exists(sidecar):
        return None
    with artefacts.open_file(sidecar) as f:
        return json.load(f)
