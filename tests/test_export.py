"""Tests for export_model.py, deeplab_dpc.export and tools/predict.py.

As a client would use them: export a small model through the command line,
load the SavedModel in a fresh Python process (without deeplab_dpc), call
both signatures on real CamVid images and compare with the Keras model; run
the TFLite file in `tf.lite.Interpreter`; send bad requests.
"""

import glob
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_dpc.core import common
from deeplab_dpc.export import saved_model as export
from deeplab_dpc.export import tflite as export_tflite
from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.modeling import checkpoints, inference, naming
from deeplab_dpc.modeling.model import build_model, model_config, save_config
from deeplab_dpc.tools import predict

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CAMVID = SHARED / "data" / "camvid" / "val" / "images"
NUM_CLASSES = 5  # the synthetic dataset's, so --dataset=synthetic names them
TFLITE_CROP = 129
MULTI_SCALES = (0.5, 1.0)
MIN_AGREEMENT = 0.999
PROB_ATOL = 1e-3  # graph (oneDNN fusions) vs eager Keras: float32 round-off


def camvid_files(n):
    files = sorted(glob.glob(str(CAMVID / "*.jpg")))
    if len(files) < n:
        pytest.skip(f"needs {n} CamVid images in {CAMVID} (shared data absent)")
    return files[:n]


def read_jpeg(path):
    return tf.io.decode_jpeg(tf.io.read_file(path)).numpy()


def randomize(model, images, seed=0):
    """Non-constant predictions: BN statistics of real images, random affine."""
    rng = np.random.default_rng(seed)
    units = list(naming.iter_units(model))
    for unit in units:
        if unit.bn is not None:
            unit.bn.momentum = 0.0  # moving statistics := this batch's
    model(tf.constant(images), training=True)
    for unit in units:
        if unit.bn is None:
            continue
        unit.bn.momentum = 0.9997
        gamma, beta, mean, var = unit.bn.get_weights()
        gamma = rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32)
        beta = rng.normal(0.0, 0.5, beta.shape).astype(np.float32)
        unit.bn.set_weights([gamma, beta, mean, var])
    (logits,) = [u.conv for u in units if naming.top_level(u.path) == common.LOGITS]
    kernel, bias = logits.get_weights()
    scale = 1.0 / np.sqrt(kernel.shape[2])
    logits.set_weights([rng.normal(0.0, scale, kernel.shape).astype(np.float32), bias])


def run_cli(args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def padded_normalized(image):
    """What eval feeds the model: pad to k * 32 + 1 with 127.5, then x / 127.5 - 1."""
    h, w = image.shape[:2]
    ph, pw = ((h + 30) // 32) * 32 + 1, ((w + 30) // 32) * 32 + 1
    padded = np.full((ph, pw, 3), 127.5, np.float32)
    padded[:h, :w] = image
    return padded / 127.5 - 1.0


def keras_probabilities(model, images, scales=(1.0,), flip=False):
    h, w = images.shape[1:3]
    batch = np.stack([padded_normalized(image) for image in images])
    probs = inference.predict_probabilities(model, tf.constant(batch), scales, flip)
    return probs.numpy()[:, :h, :w]


@pytest.fixture(scope="module")
def model_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)
    config = model_config(
        "mobilenet_v2", NUM_CLASSES, head="dpc", dpc_spec=spec_lib.TOP1,
        depth_multiplier=0.5, dataset="synthetic",
    )  # fmt: skip
    model = build_model(config)
    images = np.stack([read_jpeg(f)[::2, ::2] for f in camvid_files(3)])
    randomize(model, images.astype(np.float32) / 127.5 - 1.0)
    checkpoints.write_model_checkpoint(model, config, tmp / "ckpt")
    return model, config, tmp / "ckpt", tmp


@pytest.fixture(scope="module")
def exported(model_checkpoint):
    """Single-scale SavedModel and float TFLite file, through the command line.

    No --dataset: class names and colours come from the checkpoint's
    model_config.json (dataset synthetic).
    """
    model, _, ckpt, tmp = model_checkpoint
    result = run_cli([
        "export_model.py", f"--checkpoint_path={ckpt}", "--num_classes=5",
        f"--export_path={tmp / 'saved_model'}",
        f"--tflite_output={tmp / 'model.tflite'}",
        f"--crop_size={TFLITE_CROP},{TFLITE_CROP}",
    ])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_line(result.stdout).startswith("exported ")
    assert last_line(result.stdout).endswith(
        "classes (dataset synthetic): background, small_disc, disc_red_band, disc_blue_band, line"
    )
    return model, tmp / "saved_model", tmp / "model.tflite"


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported[1]))


CLIENT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    export_dir, out, *files = sys.argv[1:]
    assert "deeplab_dpc" not in sys.modules
    loaded = tf.saved_model.load(export_dir)
    encoded = [open(f, "rb").read() for f in files]
    images = np.stack([tf.io.decode_jpeg(e).numpy() for e in encoded])
    a = loaded.signatures["serving_default"](ImageTensor=tf.constant(images))
    b = loaded.signatures["serve_encoded"](image_bytes=tf.constant(encoded))
    asset = loaded.deeplab_config_file.asset_path.numpy().decode()
    np.savez(out, labels=a["SemanticPredictions"].numpy(),
             probs=a["SemanticProbabilities"].numpy(),
             labels_encoded=b["SemanticPredictions"].numpy(),
             probs_encoded=b["SemanticProbabilities"].numpy(),
             config=loaded.deeplab_config.numpy().decode(),
             asset=open(asset).read())
    """
)


def test_saved_model_in_fresh_process_matches_keras(exported, tmp_path):
    model, export_dir, _ = exported
    files = camvid_files(2)
    out = tmp_path / "client.npz"
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    result = run_cli([str(script), str(export_dir), str(out), *files])
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(out)
    images = np.stack([read_jpeg(f) for f in files])
    want = keras_probabilities(model, images)
    assert got["labels"].shape == images.shape[:3] and got["labels"].dtype == np.int32
    assert got["probs"].shape == images.shape[:3] + (NUM_CLASSES,)
    want_labels = want.argmax(-1)
    assert len(np.unique(want_labels)) > 1, "constant predictions test nothing"
    for key in ("labels", "labels_encoded"):
        agreement = (got[key] == want_labels).mean()
        print(f"SavedModel {key} vs Keras: {agreement:.6f} of pixels agree")
        assert agreement >= MIN_AGREEMENT, f"{key}: {agreement:.6f}"
    np.testing.assert_allclose(got["probs"], want, atol=PROB_ATOL)
    np.testing.assert_allclose(got["probs_encoded"], want, atol=PROB_ATOL)
    config = json.loads(str(got["config"]))
    assert config == json.loads(str(got["asset"]))
    assert config["model_config"] == checkpoints.read_checkpoint_config(
        str(export_dir.parent / "ckpt")
    )
    assert config["class_names"][1] == "small_disc" and config["inference_scales"] == [
        1.0
    ]
    assert config["dataset"] == "synthetic"  # from the checkpoint, no --dataset


def test_saved_model_cli_lists_signatures(exported):
    cli = Path(sys.executable).parent / "saved_model_cli"
    if not cli.exists():
        pytest.skip("saved_model_cli is not installed beside this Python")
    result = subprocess.run(
        [str(cli), "show", "--dir", str(exported[1]), "--all"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    default = text.split("signature_def['serving_default']")[1]
    encoded = text.split("signature_def['serve_encoded']")[1].split("signature_def")[0]
    for block, name, dtype in (
        (default, "ImageTensor", "DT_UINT8"),
        (encoded, "image_bytes", "DT_STRING"),
    ):
        assert f"inputs['{name}']" in block and dtype in block
        assert "outputs['SemanticPredictions']" in block and "DT_INT32" in block
        assert "outputs['SemanticProbabilities']" in block and "DT_FLOAT" in block
    assert "shape: (-1, -1, -1, 3)" in default  # batch is not fixed


def png(array):
    return tf.io.encode_png(array).numpy()


def forged_png(width, height):
    """A PNG whose header claims `width` x `height` over a few bytes of data."""

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    )  # fmt: skip


def test_bad_requests_fail_cleanly(loaded):
    images, encoded = (
        loaded.signatures["serving_default"],
        loaded.signatures["serve_encoded"],
    )
    image = read_jpeg(camvid_files(1)[0])[:65, :97]
    bad_encoded = {
        "empty image string": [b""],
        "Unknown image file format": [b"this is not an image"],
        "empty batch": [],
        "same size": [png(image), png(image[:33])],
        "too large|Invalid PNG": [forged_png(60000, 60000)],  # decompression bomb
    }
    for message, batch in bad_encoded.items():
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            encoded(image_bytes=tf.constant(batch, tf.string))
    bad_arrays = {
        "zero height or width": np.zeros((1, 0, 5, 3), np.uint8),
        "empty batch": np.zeros((0, 5, 5, 3), np.uint8),
        "request too large": np.zeros((1, 4097, 4097, 3), np.uint8),
    }
    for message, array in bad_arrays.items():
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            images(ImageTensor=tf.constant(array))
    # Documented conversions: grayscale -> RGB, alpha dropped.
    gray = image[..., :1]
    rgba = np.concatenate([image, np.full_like(gray, 7)], axis=-1)
    want_gray = images(ImageTensor=np.repeat(gray, 3, axis=-1)[None])
    want = images(ImageTensor=image[None])  # the process still serves
    got_gray = encoded(image_bytes=[png(gray)])
    got_rgba = encoded(image_bytes=[png(rgba)])
    for got, ref in ((got_gray, want_gray), (got_rgba, want)):
        np.testing.assert_array_equal(
            got["SemanticPredictions"].numpy(), ref["SemanticPredictions"].numpy()
        )


def test_check_images_needs_three_channels():
    check = tf.function(
        export.check_images,
        input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8)],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="3 \\(RGB\\) channels"):
        check(np.zeros((1, 4, 4, 1), np.uint8))
    assert check(np.zeros((2, 4, 4, 3), np.uint8)).shape == (2, 4, 4, 3)


def run_tflite(path, inputs):
    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], inputs)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"]), inp, out


def test_tflite_agrees_with_saved_model(exported, loaded):
    image = read_jpeg(camvid_files(1)[0])[100:200, 150:270]  # pads to 129 x 129
    saved = loaded.signatures["serving_default"](ImageTensor=image[None])
    inputs, (h, w) = export_tflite.prepare_input(image, (TFLITE_CROP, TFLITE_CROP))
    assert (h, w) == image.shape[:2]
    labels, inp, out = run_tflite(exported[2], inputs.numpy())
    assert inp["dtype"] == np.float32
    assert tuple(inp["shape"]) == (1, TFLITE_CROP, TFLITE_CROP, 3)
    assert out["dtype"] == np.int32 and labels.shape == (1, TFLITE_CROP, TFLITE_CROP)
    want = saved["SemanticPredictions"].numpy()[0]
    assert len(np.unique(want)) > 1
    agreement = (labels[0, :h, :w] == want).mean()
    print(f"TFLite vs SavedModel: {agreement:.6f} of pixels agree")
    assert agreement >= MIN_AGREEMENT, agreement
    sidecar = export_tflite.read_config(str(exported[2]))
    assert sidecar["tflite"]["crop_size"] == [TFLITE_CROP, TFLITE_CROP]


def test_multi_scale_export_equals_eval_prediction(model_checkpoint):
    model, config, _, tmp = model_checkpoint
    export_dir = tmp / "multi_scale"
    config = export.export_keras_model(
        model, config, str(export_dir), inference_scales=MULTI_SCALES,
        add_flipped_images=True,
    )  # fmt: skip
    assert config["inference_scales"] == list(MULTI_SCALES)
    image = read_jpeg(camvid_files(1)[0])[:150, :200]
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    got = serve(ImageTensor=image[None])["SemanticProbabilities"].numpy()
    want = keras_probabilities(model, image[None], MULTI_SCALES, flip=True)
    single = keras_probabilities(model, image[None])
    assert np.abs(want - single).max() > 1e-3  # the scales change the result
    np.testing.assert_allclose(got, want, atol=PROB_ATOL)
    agreement = (got.argmax(-1) == want.argmax(-1)).mean()
    print(f"multi-scale export vs predict_probabilities: {agreement:.6f} agree")
    assert agreement >= MIN_AGREEMENT


def test_failed_export_leaves_nothing_half_written(model_checkpoint, monkeypatch):
    _, _, ckpt, tmp = model_checkpoint
    parent = tmp / "atomic"
    old = parent / "export"
    old.mkdir(parents=True)
    (old / "saved_model.pb").write_bytes(b"an earlier export")

    def broken_save(model, config, directory):
        os.makedirs(directory)
        Path(directory, "saved_model.pb").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "save_serving_model", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_model(str(ckpt), str(old))  # through the checkpoint path
    assert sorted(os.listdir(parent)) == ["export"]
    assert (old / "saved_model.pb").read_bytes() == b"an earlier export"
    with pytest.raises(ValueError, match="not a SavedModel"):
        export.export_model(str(ckpt), str(tmp))  # holds the checkpoint


def test_checkpoint_round_trip_keeps_the_trained_model(model_checkpoint):
    """What the exports are compared with: the model as trained, not as restored."""
    model, _, ckpt, _ = model_checkpoint
    image = read_jpeg(camvid_files(1)[0])[:97, :129]
    want = keras_probabilities(model, image[None]).argmax(-1)
    restored, _, _ = checkpoints.restore_model(str(ckpt))
    round_trip = (keras_probabilities(restored, image[None]).argmax(-1) == want).mean()
    assert round_trip >= MIN_AGREEMENT, (
        f"checkpoints.restore_model does not reproduce the saved model "
        f"({round_trip:.3f} of the pixels agree): the exports cannot either"
    )


def test_load_export_model_checks_classes_and_changes_output_stride(
    model_checkpoint,
):
    _, config, ckpt, _ = model_checkpoint
    with pytest.raises(ValueError, match="has 5 classes"):
        export.load_export_model(str(ckpt), num_classes=7)
    model, resolved, _ = export.load_export_model(str(ckpt), output_stride=8)
    assert resolved["output_stride"] == 8 and config["output_stride"] == 16
    assert resolved["dpc_spec"] == config["dpc_spec"]


def test_cli_errors_are_one_line_and_exit_2(model_checkpoint, tmp_path):
    _, _, ckpt, _ = model_checkpoint
    other = tmp_path / "other_model"
    other.mkdir()
    for name in os.listdir(ckpt):
        if name != "model_config.json":
            (other / name).write_bytes((ckpt / name).read_bytes())
    save_config(
        model_config("mobilenet_v2", NUM_CLASSES, head="aspp"),
        str(other / "model_config.json"),
    )
    out = f"--export_path={tmp_path / 'out'}"
    cases = {
        "no such checkpoint": ["--checkpoint_path=/nonexistent/ckpt", out],
        "does not match": [f"--checkpoint_path={other}", out],
        "output_stride": [f"--checkpoint_path={ckpt}", "--output_stride=abc", out],
        "--quantize: unknown 'int4'; known: none, float16, int8": [
            f"--checkpoint_path={ckpt}", "--quantize=int4",
            f"--tflite_output={tmp_path / 'm.tflite'}",
        ],
    }  # fmt: skip
    procs = {
        message: subprocess.Popen(
            [sys.executable, "export_model.py", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )  # fmt: skip
        for message, args in cases.items()
    }
    for message, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, (message, stderr[-2000:])
        assert "Traceback" not in stderr, stderr[-2000:]
        ours = [x for x in stderr.splitlines() if x.startswith("export_model:")]
        assert len(ours) == 1 and message in ours[0], stderr[-2000:]
        assert last_line(stderr) == ours[0], stderr[-2000:]
    assert not os.path.exists(tmp_path / "out")


def test_predict_tool_writes_labels_and_overlays(exported, loaded, tmp_path):
    files = camvid_files(2)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    predictor = predict.load_predictor(str(exported[1]))
    failed = predict.predict_files(predictor, [*files, str(bad)], tmp_path / "sm")
    assert list(failed) == [str(bad)]
    image = read_jpeg(files[0])
    want = loaded.signatures["serving_default"](ImageTensor=image[None])
    stem = Path(files[0]).stem
    labels = np.array(Image.open(tmp_path / "sm" / f"{stem}_label.png"))
    np.testing.assert_array_equal(labels, want["SemanticPredictions"].numpy()[0])
    overlay = np.array(Image.open(tmp_path / "sm" / f"{stem}_overlay.png"))
    assert overlay.shape == image.shape and not np.array_equal(overlay, image)
    # The command line with the TFLite file: images larger than its input.
    result = run_cli([
        "-m", "deeplab_dpc.tools.predict", f"--model={exported[2]}",
        f"--images={files[0]},{bad}", f"--output_dir={tmp_path / 'tfl'}",
    ])  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert "skipped" in last_line(result.stderr) and str(bad) in result.stderr
    labels = np.array(Image.open(tmp_path / "tfl" / f"{stem}_label.png"))
    assert labels.shape == image.shape[:2] and labels.max() < NUM_CLASSES


def test_output_names_are_unique():
    assert predict.output_names(["a/x.jpg", "b/x.png", "y.jpg"]) == ["x", "x_2", "y"]


def test_tflite_options_are_checked_up_front():
    assert export_tflite.check_options({"crop_size": ["257"]})["crop_size"] == (
        257,
        257,
    )
    with pytest.raises(ValueError, match="crop_size"):
        export_tflite.check_options({"crop_size": ["a", "b"]})
    with pytest.raises(ValueError, match="representative"):
        export_tflite.check_options({"quantize": "int8"})


@pytest.mark.slow
def test_representative_data_from_the_input_pipeline(tmp_path):
    inputs = list(
        export_tflite.representative_from_dataset(
            "synthetic", str(tmp_path / "synthetic"), "val", (65, 97), 2
        )
    )
    assert len(inputs) == 2 and all(x.shape == (1, 65, 97, 3) for x in inputs)
    assert all(-1.0 <= float(tf.reduce_min(x)) for x in inputs)


def test_export_classes_come_from_the_checkpoint_unless_told():
    trained = {"num_classes": 5, "dataset": "synthetic"}
    assert export.dataset_of_checkpoint(trained) == "synthetic"
    assert export.dataset_of_checkpoint(trained, "camvid") == "camvid"
    assert export.dataset_of_checkpoint({"num_classes": 5}) is None
    # A name the registry does not know, or another class count: named by id.
    assert export.dataset_of_checkpoint({"num_classes": 5, "dataset": "x"}) is None
    assert (
        export.dataset_of_checkpoint({"num_classes": 7, "dataset": "synthetic"}) is None
    )
    config = model_config("mobilenet_v2", 5, head="aspp", dataset="synthetic")
    with pytest.raises(
        ValueError, match=r"11 classes but the model has 5 \(trained on 'synthetic'"
    ):
        export.export_config(config, dataset="camvid")
    by_id = export.export_config(dict(config, dataset=None))
    assert by_id["class_names"] == [f"class_{i}" for i in range(5)]
