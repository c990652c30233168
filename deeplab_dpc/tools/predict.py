r"""Try an exported model on image files: label PNGs and colour overlays.

    python -m deeplab_dpc.tools.predict --model=/tmp/deeplab_export \
        --images=a.jpg,b.png --output_dir=/tmp/predictions

`--model` is a SavedModel directory written by `export_model.py` (images go
through its `serve_encoded` signature, exactly what a TF Serving client
gets) or a `.tflite` file. The TFLite input has a fixed size: a larger image
is downscaled to fit (keeping its aspect ratio), padded, and the predictions
are cropped and resized back with nearest-neighbour interpolation.

For every image `<name>.<ext>` it writes `<name>_label.png` (class ids, 8-bit;
16-bit with more than 256 classes) and `<name>_overlay.png` (the image
blended with the class colours of the export config; without a config, the
PASCAL palette). An image that cannot be read or predicted is reported in
one line and skipped; the exit code is then 1. Bad flags or an unusable
model: one line and exit code 2.
"""

import io
import json
import os
import sys

import numpy as np
import tensorflow as tf
from absl import flags
from PIL import Image

from deeplab_dpc.core import artefacts, errors
from deeplab_dpc.core.option_table import Option
from deeplab_dpc.data import registry
from deeplab_dpc.export import saved_model, tflite

DEFAULT_OVERLAY_ALPHA = 0.5


class SavedModelPredictor:
    """Runs a SavedModel export through its `serve_encoded` signature."""

    def __init__(self, path):
        loaded = tf.saved_model.load(path)
        self._loaded = loaded  # keeps the variables alive
        self._serve = loaded.signatures[saved_model.SIGNATURE_ENCODED]
        self.config = json.loads(loaded.deeplab_config.numpy().decode("utf-8"))

    def __call__(self, encoded, image):
        outputs = self._serve(**{saved_model.INPUT_ENCODED: tf.constant([encoded])})
        return outputs[saved_model.OUTPUT_PREDICTIONS][0].numpy()


class TFLitePredictor:
    """Runs a TFLite export: fit the image into the fixed input, crop back."""

    def __init__(self, path, num_threads=None):
        with artefacts.open_file(path, "rb") as f:  # local or remote (gs://)
            content = f.read()
        self._interpreter = tf.lite.Interpreter(
            model_content=content, num_threads=num_threads
        )
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.crop_size = tuple(int(v) for v in self._input["shape"][1:3])
        self.config = tflite.read_config(path)

    def __call__(self, encoded, image):
        inputs, (h, w) = tflite.prepare_input(image, self.crop_size)
        self._interpreter.set_tensor(self._input["index"], inputs.numpy())
        self._interpreter.invoke()
        labels = self._interpreter.get_tensor(self._output["index"])[0, :h, :w]
        if (h, w) != tuple(image.shape[:2]):
            labels = tf.image.resize(
                labels[..., None], image.shape[:2], method="nearest"
            )[..., 0].numpy()
        return labels


def load_predictor(path):
    """A SavedModel directory or a `.tflite` file -> a predictor."""
    if artefacts.isdir(path):
        if not artefacts.exists(os.path.join(path, "saved_model.pb")):
            raise FileNotFoundError(f"{path}: not a SavedModel directory")
        return SavedModelPredictor(path)
    if not artefacts.isfile(path):
        raise FileNotFoundError(f"{path}: no such model")
    return TFLitePredictor(path)


def class_colors(config):
    """[256 or more, 3] uint8 colours: the export's colour map, else PASCAL's."""
    colormap = (config or {}).get("colormap") or []
    size = max(256, len(colormap))
    palette = np.array(registry.pascal_colormap(size), np.uint8)
    if colormap:
        palette[: len(colormap)] = np.array(colormap, np.uint8)
    return palette


def overlay(image, labels, palette, alpha=DEFAULT_OVERLAY_ALPHA):
    """The image blended with the colour of each pixel's class."""
    colors = palette[np.clip(labels, 0, len(palette) - 1)].astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colors
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def label_image(labels):
    """A PIL image of class ids: 8-bit when they fit, else 16-bit."""
    if labels.max(initial=0) < 256:
        return Image.fromarray(labels.astype(np.uint8))
    return Image.fromarray(labels.astype(np.uint16))


def _save_png(image, path):
    """Writes a PIL image as PNG atomically, locally or remotely (gs://)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    artefacts.write_bytes(buffer.getvalue(), path)


def output_names(paths):
    """Output name stems for input paths, unique even when base names repeat."""
    names, used = [], set()
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name)
        names.append(name)
    return names


def predict_files(predictor, paths, output_dir, alpha=DEFAULT_OVERLAY_ALPHA):
    """Writes label PNGs and overlays; returns {path: error} of skipped images."""
    artefacts.makedirs(output_dir)
    palette = class_colors(predictor.config)
    failed = {}
    for path, name in zip(paths, output_names(paths)):
        try:
            with artefacts.open_file(path, "rb") as f:
                encoded = f.read()
            image = saved_model.decode_image(tf.constant(encoded)).numpy()
            labels = predictor(encoded, image)
        except (OSError, tf.errors.OpError) as e:
            failed[path] = saved_model.request_error(e)
            continue
        _save_png(label_image(labels), os.path.join(output_dir, f"{name}_label.png"))
        _save_png(
            Image.fromarray(overlay(image, labels, palette, alpha)),
            os.path.join(output_dir, f"{name}_overlay.png"),
        )
    return failed


def expand_images(spec):
    """Comma-separated file names or globs -> a list of files."""
    paths = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        matches = (
            sorted(tf.io.gfile.glob(item)) if any(c in item for c in "*?[") else []
        )
        paths += matches or [item]
    if not paths:
        raise ValueError("images: no image files given")
    return paths


FLAGS = flags.FLAGS


OPTIONS = (
    Option("model", "string", None, "SavedModel directory or .tflite file.",
           required=True),
    Option("images", "string", None, "Comma-separated image files or globs.",
           required=True),
    Option("output_dir", "string", None, "Where to write the PNGs.", required=True),
    Option("overlay_alpha", "float", DEFAULT_OVERLAY_ALPHA, "Weight of the colours.",
           low=0.0, high=1.0),
)  # fmt: skip


def define_flags():
    from deeplab_dpc import command_line

    command_line.define_options(OPTIONS)


def check_flags():
    """Every flag, before TensorFlow loads the model; ValueError names the flag."""
    from deeplab_dpc import command_line

    command_line.option_values(OPTIONS)
    if artefacts.exists(FLAGS.output_dir) and not artefacts.isdir(FLAGS.output_dir):
        raise ValueError(f"--output_dir: {FLAGS.output_dir} is not a directory")
    try:
        paths = expand_images(FLAGS.images)
    except ValueError as e:
        raise ValueError(f"--{e}") from None
    model = FLAGS.model
    if artefacts.isdir(model) and not artefacts.exists(
        os.path.join(model, "saved_model.pb")
    ):
        raise ValueError(f"--model: {model} is not a SavedModel directory")
    if not artefacts.exists(model):
        raise ValueError(
            f"--model: no such SavedModel directory or .tflite file {model}"
        )
    return paths


def main(argv):
    del argv
    try:
        paths = check_flags()
        predictor = load_predictor(FLAGS.model)
    except (ValueError, OSError, tf.errors.OpError) as e:
        errors.fail(e, "predict")
    failed = predict_files(predictor, paths, FLAGS.output_dir, FLAGS.overlay_alpha)
    for path, message in failed.items():
        print(f"predict: skipped {path}: {message}", file=sys.stderr)
    print(f"wrote {len(paths) - len(failed)} predictions to {FLAGS.output_dir}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    from deeplab_dpc import command_line

    define_flags()
    command_line.run(main, "predict")
