"""Export of the imported official DeepLab TFLite model.

Imports `deeplabv3_257_mv_gpu.tflite` (MobileNetV2 0.5, output stride 8,
ASPP-lite, PASCAL VOC) into our Keras model with `tools.import_weights`,
exports it with `export_model.py`, and checks on real CamVid crops that our
TFLite export reproduces the official file, that the SavedModel agrees with
our TFLite export, and how far float16 / int8 quantisation move the labels.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.export import saved_model as export
from deeplab_dpc.export import tflite as export_tflite
from deeplab_dpc.modeling import checkpoints
from deeplab_dpc.modeling.model import model_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OFFICIAL = SHARED / "models" / "deeplabv3_257_mv_gpu.tflite"
CAMVID = SHARED / "data" / "camvid" / "val" / "images"
CROP = 257
# Fraction of pixels whose class must not change (measured: see g3doc/export.md).
MIN_AGREEMENT = {"official": 0.999, "saved_model": 0.999, "float16": 0.99, "int8": 0.9}


def run_tflite(path, inputs):
    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), outputs = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], inputs)
    interpreter.invoke()
    return interpreter.get_tensor(outputs[0]["index"])


def crops():
    files = sorted(CAMVID.glob("*.jpg"))[:4]
    if not OFFICIAL.exists() or len(files) < 4:
        pytest.skip(f"needs {OFFICIAL} and CamVid images in {CAMVID}")
    images = [tf.io.decode_jpeg(tf.io.read_file(str(f))).numpy() for f in files]
    return [image[60 : 60 + CROP, 100 : 100 + CROP] for image in images]


@pytest.fixture(scope="module")
def official_export(tmp_path_factory):
    """The official weights imported and exported through the command line."""
    from deeplab_dpc.tools.import_weights import import_weights

    images = crops()
    tmp = tmp_path_factory.mktemp("official")
    config = model_config(
        "mobilenet_v2", 21, head="aspp", atrous_rates=[], output_stride=8,
        depth_multiplier=0.5,
    )  # fmt: skip
    import_weights(str(OFFICIAL), config, str(tmp / "ckpt"))
    result = subprocess.run(
        [
            sys.executable, "export_model.py", f"--checkpoint_path={tmp / 'ckpt'}",
            f"--export_path={tmp / 'saved_model'}", "--dataset=pascal_voc_seg",
            f"--tflite_output={tmp / 'ours.tflite'}", f"--crop_size={CROP},{CROP}",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    inputs = [export_tflite.prepare_input(i, (CROP, CROP))[0].numpy() for i in images]
    want = np.stack([run_tflite(tmp / "ours.tflite", x)[0] for x in inputs])
    assert len(np.unique(want)) > 1, "a single class on street scenes: no test"
    return tmp, images, inputs, want


def agreement(got, want, key):
    value = (np.stack(got) == want).mean()
    print(f"{key} vs our float TFLite export: {value:.5f} of pixels agree")
    assert value >= MIN_AGREEMENT[key], (key, value)


def test_export_of_imported_official_model_matches_official(official_export):
    tmp, images, inputs, want = official_export
    resolved = export.read_export_config(str(tmp / "saved_model"))
    assert resolved["class_names"][15] == "person"
    agreement([run_tflite(OFFICIAL, x)[0].argmax(-1) for x in inputs], want, "official")
    serve = tf.saved_model.load(str(tmp / "saved_model")).signatures["serving_default"]
    labels = [serve(ImageTensor=i[None])["SemanticPredictions"][0] for i in images]
    agreement(labels, want, "saved_model")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["float16", "int8"])
def test_quantized_export_of_official_model(official_export, mode):
    tmp, _, inputs, want = official_export
    model, _, _ = checkpoints.restore_model(str(tmp / "ckpt"))
    resolved = export.read_export_config(str(tmp / "saved_model"))
    content, info = export_tflite.convert(
        model, resolved, crop_size=(CROP, CROP), quantize=mode,
        representative_images=str(CAMVID / "*.jpg"), num_representative=16,
    )  # fmt: skip
    assert info["quantize"] == mode
    path = tmp / f"{mode}.tflite"
    path.write_bytes(content)
    agreement([run_tflite(path, x)[0] for x in inputs], want, mode)
    assert path.stat().st_size < (tmp / "ours.tflite").stat().st_size
