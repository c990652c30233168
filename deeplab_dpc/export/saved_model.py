"""Export a trained model for serving: a SavedModel and optionally a TFLite file.

Follows the original DeepLab's `export_model.py` (input `ImageTensor`, uint8;
output `SemanticPredictions`, the class id of every pixel), so client code
written for DeepLab keeps working. The SavedModel has two signatures:

* `serving_default`: `ImageTensor` uint8 [batch, H, W, 3] ->
  `SemanticPredictions` int32 [batch, H, W] and `SemanticProbabilities`
  float32 [batch, H, W, classes].
* `serve_encoded`: `image_bytes` string [batch] (JPEG, PNG, GIF or BMP; what
  TF Serving REST clients send as `{"b64": ...}`) -> the same outputs.

The export config (model config, class names, colours, scales) is stored as
the asset `assets/deeplab_config.json` and as the string variable
`deeplab_config` of the loaded object.

Deviations from DeepLab, all deliberate:

* Any image size and any batch size. DeepLab fixed the batch to 1 and needed
  `--crop_size` to size its pooling and resizes; here pooling adapts to the
  input (`layers/pooling.py`), and the graph pads each batch bottom/right
  with the mean pixel to the next k * 32 + 1 size (as eval does, see
  `data/preprocess.eval_pad_size`) and crops the predictions back. DeepLab
  instead resized images to fit the crop size. `--crop_size` now only fixes
  the TFLite input.
* Multi-scale and flipped inference call `inference.predict_probabilities`,
  the function eval uses, so export and eval predict the same thing.
* Probabilities are an output (softmax averaged over scales and flips).
* Bad input fails the request with an InvalidArgument error naming the
  problem (empty batch, zero-size image, not 3 channels, empty string, bytes
  that are not an image, images of different sizes in one `serve_encoded`
  request, more than `max_pixels` pixels in one request), checked before any
  model op runs. Encoded grayscale images are converted to RGB and the alpha
  channel of RGBA images is dropped (`tf.io.decode_image(channels=3)`).
* The export is written into a temporary sibling directory and renamed into
  place, so a failed export never leaves a half-written SavedModel.
"""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from deeplab_dpc.core import artefacts, common, errors
from deeplab_dpc.data import preprocess, registry
from deeplab_dpc.export import tflite
from deeplab_dpc.modeling import checkpoints, inference
from deeplab_dpc.modeling.model import ModelConfigError, model_config

# --- Serving vocabulary (the original DeepLab tensor names) -----------------
INPUT_IMAGES = "ImageTensor"
INPUT_ENCODED = "image_bytes"  # `_bytes`: base64 in JSON by TF Serving convention
OUTPUT_PREDICTIONS = "SemanticPredictions"
OUTPUT_PROBABILITIES = "SemanticProbabilities"
SIGNATURE_IMAGES = "serving_default"
SIGNATURE_ENCODED = "serve_encoded"
CONFIG_ASSET = "deeplab_config.json"
EXPORT_FORMAT_VERSION = 1

PAD_MULTIPLE = common.PAD_MULTIPLE  # pad to k * 32 + 1, as eval does
DEFAULT_MAX_PIXELS = 4096 * 4096  # per request (batch * H * W); 0: no limit


_OUTPUTS_DOC = {
    OUTPUT_PREDICTIONS: "int32 [batch, height, width]: class ids",
    OUTPUT_PROBABILITIES: "float32 [batch, height, width, classes]",
}


def export_config(
    config,
    checkpoint=None,
    inference_scales=(1.0,),
    add_flipped_images=False,
    dataset=None,
    max_pixels=DEFAULT_MAX_PIXELS,
):
    """The resolved export configuration written beside every exported model.

    `dataset` (a registry name) gives class names and colours; it must have the
    model's number of classes. Without it (see `dataset_of_checkpoint`, which
    `export_model` applies first) the classes are named by id and coloured
    with the generated PASCAL palette.
    """
    if not inference_scales:
        raise ValueError("inference_scales: at least one scale is needed")
    scales = [
        float(errors.check_range("inference_scales", s, 0.0, low_open=True))
        for s in inference_scales
    ]
    errors.check_range("max_pixels", int(max_pixels), 0)
    num_classes = config["num_classes"]
    if dataset:
        info = registry.get_dataset_info(dataset)
        if info.num_classes != num_classes:
            trained = config.get("dataset")
            hint = f" (trained on {trained!r}: drop --dataset)" if trained else ""
            raise ValueError(
                f"dataset {dataset!r} has {info.num_classes} classes but the "
                f"model has {num_classes}{hint}"
            )
    else:
        info = registry.custom_dataset_info("unknown", num_classes)
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "model_config": config,
        "checkpoint": checkpoint,
        "dataset": dataset or None,
        "class_names": list(info.class_names),
        "colormap": [list(c) for c in info.colormap],
        "inference_scales": scales,
        "add_flipped_images": bool(add_flipped_images),
        "pad_multiple": PAD_MULTIPLE,
        "max_pixels": int(max_pixels),
        "signatures": {
            SIGNATURE_IMAGES: {
                "inputs": {INPUT_IMAGES: "uint8 [batch, height, width, 3]"},
                "outputs": _OUTPUTS_DOC,
            },
            SIGNATURE_ENCODED: {
                "inputs": {INPUT_ENCODED: "string [batch]: JPEG/PNG/GIF/BMP, one size"},
                "outputs": _OUTPUTS_DOC,
            },
        },
    }


def decode_image(encoded):
    """One encoded image -> uint8 [H, W, 3]; grayscale to RGB, alpha dropped."""
    check = tf.debugging.assert_positive(
        tf.strings.length(encoded), message="empty image string"
    )
    with tf.control_dependencies([check]):
        return tf.io.decode_image(
            encoded, channels=3, dtype=tf.uint8, expand_animations=False
        )


def request_error(error):
    """One line saying why a serving request failed (for logs and the predict tool).

    A failed check in the serving graph reaches the caller as a multi-line
    `InvalidArgumentError` whose first line is TensorFlow's "Graph execution
    error:" and whose cause is further down ("assertion failed: [empty batch
    of images] ..." or a decoder's message); this returns that cause.
    """
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in text.splitlines()]
    for line in lines:
        if line.startswith("assertion failed: ["):
            return line[len("assertion failed: [") :].split("]", 1)[0]
    skip = ("Graph execution error", "Detected at node", "File ", "[[", "Op:")
    for raw, line in zip(text.splitlines(), lines):
        if line and not raw.startswith((" ", "\t")) and not line.startswith(skip):
            return line
    return type(error).__name__


def check_images(images, max_pixels=0):
    """Asserts a usable uint8 batch [B, H, W, 3]; returns it after the checks."""
    shape = tf.shape(images, out_type=tf.int64)
    checks = [
        tf.debugging.assert_equal(
            tf.size(shape, out_type=tf.int64),
            tf.constant(4, tf.int64),
            message="images must be a batch [batch, height, width, 3]",
        ),
    ]
    with tf.control_dependencies(checks):
        checks += [
            tf.debugging.assert_equal(
                shape[3],
                tf.constant(3, tf.int64),
                message="images must have 3 (RGB) channels",
            ),
            tf.debugging.assert_positive(shape[0], message="empty batch of images"),
            tf.debugging.assert_positive(
                tf.reduce_min(shape[1:3]), message="image has zero height or width"
            ),
        ]
        if max_pixels:
            checks.append(
                tf.debugging.assert_less_equal(
                    tf.reduce_prod(shape[:3]),
                    tf.constant(max_pixels, tf.int64),
                    message=f"request too large: batch * height * width must be "
                    f"<= {max_pixels} pixels",
                )
            )
    with tf.control_dependencies(checks):
        return tf.identity(images)


def predict_images(model, images, scales=(1.0,), add_flipped_images=False):
    """uint8 [B, H, W, 3] -> (class ids [B, H, W], probabilities [B, H, W, C]).

    Pads bottom/right with the mean pixel to the eval size k * 32 + 1,
    normalises, predicts as eval does and crops back to H x W.
    """
    size = tf.shape(images)[1:3]
    target_h, target_w = preprocess.eval_pad_size(size[0], size[1], PAD_MULTIPLE)
    paddings = [[0, 0], [0, target_h - size[0]], [0, target_w - size[1]], [0, 0]]
    mean = tf.constant(common.MEAN_PIXEL, tf.float32)
    padded = tf.pad(tf.cast(images, tf.float32) - mean, paddings) + mean
    probs = inference.predict_probabilities(
        model, preprocess.normalize_image(padded), scales, add_flipped_images
    )
    probs = probs[:, : size[0], : size[1], :]
    return tf.argmax(probs, axis=-1, output_type=tf.int32), probs


class DeepLabServingModule(tf.Module):
    """The object that is saved: the Keras model, its config and two signatures."""

    def __init__(self, model, config, config_path):
        super().__init__(name="deeplab")
        self.model = model
        self._scales = tuple(config["inference_scales"])
        self._flip = config["add_flipped_images"]
        self._max_pixels = config["max_pixels"]
        self.deeplab_config = tf.Variable(
            json.dumps(config, sort_keys=True), trainable=False, name="deeplab_config"
        )
        self.deeplab_config_file = tf.saved_model.Asset(config_path)

    def _outputs(self, images):
        images = check_images(images, self._max_pixels)
        labels, probs = predict_images(self.model, images, self._scales, self._flip)
        return {OUTPUT_PREDICTIONS: labels, OUTPUT_PROBABILITIES: probs}

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, INPUT_IMAGES)]
    )
    def serve_images(self, images):
        return self._outputs(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, INPUT_ENCODED)])
    def serve_encoded(self, image_bytes):
        check = tf.debugging.assert_positive(
            tf.size(image_bytes), message="empty batch of images"
        )
        with tf.control_dependencies([check]):
            first_shape = tf.shape(decode_image(image_bytes[0]))

        def decode_same_size(encoded):
            image = decode_image(encoded)
            same = tf.debugging.assert_equal(
                tf.shape(image),
                first_shape,
                message="images of one request must all have the same size; "
                "send images of other sizes in separate requests",
            )
            with tf.control_dependencies([same]):
                return tf.identity(image)

        images = tf.map_fn(
            decode_same_size,
            image_bytes,
            fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
        )
        # A call of the other signature's function: the model is traced once
        # for both signatures (and saved once), not once per signature.
        return self.serve_images(images)

    def signatures(self):
        return {
            SIGNATURE_IMAGES: self.serve_images.get_concrete_function(),
            SIGNATURE_ENCODED: self.serve_encoded.get_concrete_function(),
        }


def check_export_path(path):
    """Refuses to overwrite anything but an earlier SavedModel export."""
    if not artefacts.exists(path):
        return
    if not artefacts.isdir(path):
        raise ValueError(f"export_path {path} exists and is not a directory")
    if artefacts.listdir(path) and not artefacts.exists(
        os.path.join(path, "saved_model.pb")
    ):
        raise ValueError(
            f"export_path {path} is a non-empty directory that is not a SavedModel; "
            "refusing to overwrite it"
        )


def save_serving_model(model, config, directory):
    """Writes the SavedModel with both signatures into `directory` (must be new)."""
    staging = tempfile.mkdtemp(prefix="deeplab_config_")
    try:
        config_path = os.path.join(staging, CONFIG_ASSET)
        artefacts.write_json(config, config_path)
        module = DeepLabServingModule(model, config, config_path)
        tf.saved_model.save(module, directory, signatures=module.signatures())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_export_model(checkpoint_path, output_stride=None, num_classes=None):
    """Restores the checkpoint; `output_stride` may differ from training's."""
    checkpoints.resolve_checkpoint(checkpoint_path)  # "no such checkpoint" first
    config = checkpoints.read_checkpoint_config(checkpoint_path)
    if num_classes is not None and int(num_classes) != config["num_classes"]:
        raise ValueError(
            f"num_classes={num_classes} but the checkpoint {checkpoint_path} "
            f"has {config['num_classes']} classes"
        )
    if output_stride is not None and int(output_stride) != config["output_stride"]:
        fields = {k: v for k, v in config.items() if k != "version"}
        config = model_config(**{**fields, "output_stride": int(output_stride)})
    try:
        return checkpoints.restore_model(checkpoint_path, config=config)
    except (checkpoints.CheckpointError, ModelConfigError):
        raise
    except ValueError as e:  # TF's shape mismatch while restoring
        first = str(e).strip().splitlines()[0]
        raise checkpoints.CheckpointError(
            f"{checkpoint_path}: does not match its model config: {first}"
        ) from e


def dataset_of_checkpoint(config, dataset=None):
    """`dataset` if given, else the one the model was trained on, or None.

    The training dataset is the `dataset` field of the checkpoint's
    model_config.json, used when the registry knows it and its class count is
    the model's (a custom `--dataset_info_json` dataset is not known here:
    the classes are then named by id).
    """
    if dataset:
        return dataset
    name = config.get("dataset")
    if not name:
        return None
    try:
        info = registry.get_dataset_info(name)
    except ValueError:
        return None
    return name if info.num_classes == config["num_classes"] else None


def _check_outputs(export_path, tflite_output, tflite_options, dataset):
    """Validates output paths and TFLite options before any slow work."""
    if not export_path and not tflite_output:
        raise ValueError("nothing to do: give export_path and/or tflite_output")
    if export_path:
        check_export_path(export_path)
    if tflite_output:
        tflite.check_output_path(tflite_output)
        return tflite.check_options(tflite_options, dataset)
    return None


def export_model(
    checkpoint_path,
    export_path=None,
    *,
    output_stride=None,
    num_classes=None,
    **kwargs,
):
    """Exports a checkpoint as a SavedModel and/or a TFLite file; returns the config.

    `output_stride` may differ from training's; `num_classes` is a check.
    `dataset` (class names, colours) defaults to the checkpoint's own
    (`dataset_of_checkpoint`). The other keyword arguments are those of
    `export_keras_model`.
    """
    _check_outputs(
        export_path,
        kwargs.get("tflite_output"),
        kwargs.get("tflite_options"),
        kwargs.get("dataset"),
    )
    model, config, prefix = load_export_model(
        checkpoint_path, output_stride, num_classes
    )
    kwargs["dataset"] = dataset_of_checkpoint(config, kwargs.get("dataset"))
    return export_keras_model(model, config, export_path, checkpoint=prefix, **kwargs)


def export_keras_model(
    model,
    config,
    export_path=None,
    *,
    checkpoint=None,
    inference_scales=(1.0,),
    add_flipped_images=False,
    dataset=None,
    max_pixels=DEFAULT_MAX_PIXELS,
    tflite_output=None,
    tflite_options=None,
):
    """Exports a Keras model built from the model `config`; returns the export config.

    `tflite_options` are keyword arguments of `tflite.convert` (crop
    size, quantisation, representative data). Both outputs are finished in
    temporary places first and renamed only when everything succeeded.
    """
    tflite_options = _check_outputs(export_path, tflite_output, tflite_options, dataset)
    resolved = export_config(
        config, checkpoint, inference_scales, add_flipped_images, dataset, max_pixels
    )
    staged = None
    try:
        if export_path:
            parent, name = os.path.split(artefacts.absolute(export_path).rstrip("/"))
            staged = artefacts.make_staging_dir(parent, f".tmp_{name}_")
            artefacts.remove_tree(staged)  # a free unique name: the save creates it
            save_serving_model(model, resolved, staged)
        if tflite_output:
            content, tflite_info = tflite.convert(
                model, resolved, dataset=dataset, **tflite_options
            )
        if export_path:
            artefacts.install_dir(staged, export_path, last=("saved_model.pb",))
            staged = None
        if tflite_output:
            tflite.write(content, resolved, tflite_info, tflite_output)
    finally:
        if staged and artefacts.exists(staged):
            artefacts.remove_tree(staged)
    return resolved


def read_export_config(export_dir):
    """The export config of a SavedModel directory, without loading the model."""
    path = os.path.join(export_dir, "assets", CONFIG_ASSET)
    if not artefacts.exists(path):
        raise FileNotFoundError(f"{export_dir}: no assets/{CONFIG_ASSET}")
    with artefacts.open_file(path) as f:
        return json.load(f)
