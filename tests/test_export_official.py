"""Export of the imported official DeepLab TFLite model (about 40 s).

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

from deeplab_dpc import checkpoints, export, export_tflite
from deeplab_dpc.model import model_config

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


def test_export_of_imported_official_model(tmp_path):
    from deeplab_dpc.tools.import_weights import import_weights

    images = crops()
    config = model_config(
        "mobilenet_v2", 21, head="aspp", atrous_rates=[], output_stride=8,
        depth_multiplier=0.5,
    )  # fmt: skip
    import_weights(str(OFFICIAL), config, str(tmp_path / "ckpt"))
    ours = tmp_path / "ours.tflite"
    result = subprocess.run(
        [
            sys.executable, "export_model.py",
            f"--checkpoint_path={tmp_path / 'ckpt'}",
            f"--export_path={tmp_path / 'saved_model'}",
            "--dataset=pascal_voc_seg", f"--tflite_output={ours}",
            f"--crop_size={CROP},{CROP}",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    model, _, _ = checkpoints.restore_model(str(tmp_path / "ckpt"))
    resolved = export.read_export_config(str(tmp_path / "saved_model"))
    assert resolved["class_names"][15] == "person"
    quantized = {}
    for mode in ("float16", "int8"):
        content, _ = export_tflite.convert(
            model, resolved, crop_size=(CROP, CROP), quantize=mode,
            representative_images=str(CAMVID / "*.jpg"), num_representative=16,
        )  # fmt: skip
        quantized[mode] = tmp_path / f"{mode}.tflite"
        quantized[mode].write_bytes(content)
    serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures[
        "serving_default"
    ]
    got = {key: [] for key in MIN_AGREEMENT}
    want = []
    for image in images:
        inputs = export_tflite.prepare_input(image, (CROP, CROP))[0].numpy()
        labels = run_tflite(ours, inputs)[0]
        want.append(labels)
        got["official"].append(run_tflite(OFFICIAL, inputs)[0].argmax(-1))
        got["saved_model"].append(
            serve(ImageTensor=image[None])["SemanticPredictions"].numpy()[0]
        )
        for mode, path in quantized.items():
            got[mode].append(run_tflite(path, inputs)[0])
    want = np.stack(want)
    assert len(np.unique(want)) > 1, "a single class on street scenes: no test"
    for key, minimum in MIN_AGREEMENT.items():
        agreement = (np.stack(got[key]) == want).mean()
        print(f"{key} vs our float TFLite export: {agreement:.5f} of pixels agree")
        assert agreement >= minimum, (key, agreement)
    for mode, path in quantized.items():
        assert path.stat().st_size < ours.stat().st_size, mode
