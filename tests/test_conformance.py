"""Conformance: the released DeepLab TFLite model, imported, is reproduced by ours.

`../shared/models/deeplabv3_257_mv_gpu.tflite` is a real DeepLab v3 release
(MobileNetV2, depth multiplier 0.5, output stride 8, ASPP-lite, 21 PASCAL VOC
classes, batch norm folded). We build the same architecture, import its
weights with `import_weights` and run both on real street scenes from CamVid
(cars and people are VOC classes), resized identically to 257x257 and
normalised as x / 127.5 - 1. Targets: relative L2 error of the logits below
1e-4 and argmax agreement on at least 99.9% of pixels. Skipped, with the
reason, when the model or the images are absent (a fresh clone has no
../shared; CI has it).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_dpc.core import common
from deeplab_dpc.modeling.model import build_model, model_config
from deeplab_dpc.tools import import_weights as iw
from deeplab_dpc.tools import weight_sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
MODEL = os.path.join(SHARED, "models", "deeplabv3_257_mv_gpu.tflite")
CAMVID = os.path.join(SHARED, "data", "camvid")
# Street scenes where the released model finds both cars and people.
IMAGES = (
    "train/images/0006R0_f02220.jpg",
    "train/images/0016E5_01950.jpg",
    "val/images/0016E5_08045.jpg",
)
CONFIG = dict(
    model_variant="mobilenet_v2",
    num_classes=21,
    head="aspp",
    atrous_rates=[],
    output_stride=8,
    depth_multiplier=0.5,
)
SIZE = 257
VOC_CAR, VOC_PERSON = 7, 15
MAX_RELATIVE_ERROR = 1e-4
MIN_AGREEMENT = 0.999


def load_images(paths, size=SIZE):
    """RGB files -> float32 [N, size, size, 3] in [-1, 1] (bilinear resize, x / 127.5 - 1)."""
    arrays = []
    for path in paths:
        with Image.open(path) as image:
            resized = image.convert("RGB").resize((size, size), Image.BILINEAR)
        arrays.append(np.asarray(resized, np.float32) / 127.5 - 1.0)
    return np.stack(arrays)


def tflite_logits(path, images):
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=2)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    logits = []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        logits.append(interpreter.get_tensor(out["index"])[0])
    return np.stack(logits)


def compare(ours, reference):
    """(relative L2 error of the logits, fraction of pixels with the same argmax)."""
    error = np.linalg.norm(ours - reference) / np.linalg.norm(reference)
    agreement = np.mean(ours.argmax(-1) == reference.argmax(-1))
    return float(error), float(agreement)


@pytest.fixture(scope="module")
def reference():
    """(images, TFLite logits); skips when the shared model or images are absent."""
    if not os.path.isfile(MODEL):
        pytest.skip(f"{MODEL} is absent (a fresh clone has no ../shared; CI has it)")
    paths = [os.path.join(CAMVID, p) for p in IMAGES]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        pytest.skip(f"{missing[0]} is absent (CamVid images under ../shared/data)")
    images = load_images(paths)
    return images, tflite_logits(MODEL, images)


def test_imported_model_reproduces_the_released_tflite(reference):
    images, expected = reference
    config = model_config(**CONFIG)
    model = build_model(config)
    report = iw.import_into_model(model, config, weight_sources.read_source(MODEL))
    assert not report["fresh"] and not report["warnings"]
    assert len(report["loaded"]) == 55 and report["used_tensors"] == 110
    assert all("int32 constant" in e["reason"] for e in report["unused"])
    ours = model(images, training=False)[common.SEMANTIC_LOGITS].numpy()
    error, agreement = compare(ours, expected)
    print(
        f"\nconformance: logits relative L2 error {error:.2e}, argmax agreement {agreement:.6f}"
    )
    assert error < MAX_RELATIVE_ERROR
    assert agreement >= MIN_AGREEMENT
    classes = set(np.unique(expected.argmax(-1)).tolist())
    assert {VOC_CAR, VOC_PERSON} <= classes  # real scenes, real predictions


def test_wrong_depth_multiplier_names_the_tflite_tensor(reference):
    config = model_config(**{**CONFIG, "depth_multiplier": 1.0})
    with pytest.raises(
        iw.WeightImportError,
        match=r"^MobilenetV2/Conv/weights: stored \[16, 3, 3, 3\] \(\[3, 3, 3, 16\] as Keras\), "
        r"but backbone/Conv needs \[3, 3, 3, 32\]",
    ):
        iw.import_into_model(
            build_model(config), config, weight_sources.read_source(MODEL)
        )


def test_command_line_import_gives_a_checkpoint_that_reproduces_it(reference, tmp_path):
    """What a user does: import on the command line, then restore the checkpoint."""
    from deeplab_dpc.modeling.checkpoints import restore_model

    images, expected = reference
    output = str(tmp_path / "deeplabv3_mnv2_dm05_voc")
    flags = [f"--source={MODEL}", f"--output={output}", "--atrous_rates="]
    flags += [
        f"--{k}={CONFIG[k]}"
        for k in (
            "model_variant",
            "depth_multiplier",
            "output_stride",
            "head",
            "num_classes",
        )
    ]
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_dpc.tools.import_weights", *flags],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "summary: source tensors: 110 used, 3 unused (of 113); model weights: 272 loaded, 0 initialised fresh"
        in result.stdout
    )
    model, _, _ = restore_model(output)
    ours = model(images[:1], training=False)[common.SEMANTIC_LOGITS].numpy()
    error, agreement = compare(ours, expected[:1])
    assert error < MAX_RELATIVE_ERROR, (
        f"restored checkpoint: relative error {error:.3g} (agreement {agreement:.4f}); "
        "the in-memory import conforms, so weights were lost in the checkpoint"
    )
