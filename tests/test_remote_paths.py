"""Train, eval, vis, export and predict write through tf.io.gfile: a run on `ram://`.

`ram://` is TensorFlow's in-memory file system: a path that only tf.io.gfile
understands, like `gs://` on a TPU or cloud machine. Anything still going
through `os.makedirs`, `os.path.abspath` or `open()` turns it into a local
`<cwd>/ram:/...` path or fails, so the test also asserts that nothing of
the run appears on the local disk. The data itself stays local (the data
pipeline has read through tf.io.gfile all along).
"""

import os

import numpy as np
import tensorflow as tf

from deeplab_dpc.core import artefacts
from deeplab_dpc.data import registry, synthetic
from deeplab_dpc.evaluation import evaluator, visualizer
from deeplab_dpc.export import saved_model, tflite
from deeplab_dpc.modeling import checkpoints
from deeplab_dpc.modeling.model import build_model, model_config
from deeplab_dpc.reporting import colormaps
from deeplab_dpc.tools import predict
from deeplab_dpc.training import options as options_lib
from deeplab_dpc.training import trainer

gfile = tf.io.gfile


def test_train_eval_vis_export_on_ram_filesystem(tmp_path, monkeypatch):
    data = str(tmp_path / "synthetic")
    synthetic.generate_synthetic_dataset(
        data, num_train=4, num_val=2, image_size=(33, 33)
    )
    monkeypatch.chdir(tmp_path)  # a path taken for local would land here
    root = "ram://deeplab_dpc_test_remote"
    info = registry.get_dataset_info("synthetic")
    cfg = model_config(
        "mobilenet_v2", info.num_classes, head="aspp", depth_multiplier=0.25,
        dataset="synthetic",
    )  # fmt: skip
    logdir = f"{root}/train"
    options = options_lib.train_options(
        logdir, dataset="synthetic", dataset_dir=data, train_crop_size=(33, 33),
        train_batch_size=2, training_number_of_steps=2, log_steps=1, seed=0,
        save_summaries_secs=1e9,
    )  # fmt: skip
    assert options["train_logdir"] == logdir  # not made absolute as a local path
    try:
        result = trainer.train(cfg, options, info)
        assert result["step"] == 2
        assert result["checkpoint"] == f"{logdir}/ckpt-2"
        assert tf.train.latest_checkpoint(logdir) == f"{logdir}/ckpt-2"
        assert artefacts.read_train_config(logdir)["train_logdir"] == logdir
        assert checkpoints.read_checkpoint_config(logdir)["depth_multiplier"] == 0.25
        assert gfile.glob(f"{logdir}/events.out.tfevents.*")

        results = evaluator.evaluate(
            logdir, f"{root}/eval", info, data=data, wait_secs=0
        )
        assert results["step"] == 2 and results["num_images"] == 2
        assert artefacts.read_results(f"{root}/eval")["miou"] == results["miou"]

        count = visualizer.visualize_checkpoints(
            logdir, f"{root}/vis", info, data=data, max_images=1,
            wait_secs=0,
        )  # fmt: skip
        assert count == 1
        written = gfile.listdir(f"{root}/vis/{visualizer.SEGMENTATION_DIR}")
        assert sorted(n.rsplit("_", 1)[1] for n in written) == [
            "image.png", "panel.png", "prediction.png",
        ]  # fmt: skip

        export_dir = f"{root}/export/model"
        config = saved_model.export_model(
            logdir, export_dir, tflite_output=f"{root}/export/model.tflite",
            tflite_options={"crop_size": (33, 33)},
        )  # fmt: skip
        assert config["checkpoint"] == f"{logdir}/ckpt-2"
        assert gfile.exists(f"{export_dir}/saved_model.pb")
        assert (
            saved_model.read_export_config(export_dir)["checkpoint"]
            == config["checkpoint"]
        )
        assert sorted(gfile.listdir(f"{root}/export")) == [
            "model", "model.tflite", "model.tflite.json",
        ]  # fmt: skip
        assert tflite.read_config(f"{root}/export/model.tflite")["class_names"] == list(
            info.class_names
        )
        loaded = tf.saved_model.load(export_dir)
        out = loaded.signatures["serving_default"](tf.zeros([1, 33, 33, 3], tf.uint8))
        assert any(v.shape[1:3] == (33, 33) for v in out.values())
        # tools.predict reads both exports and an image from ram:// and writes there
        image = f"{root}/images/a.png"
        artefacts.write_bytes(colormaps.encode_png(np.full((30, 33, 3), 128)), image)
        for model in (export_dir, f"{root}/export/model.tflite"):
            predictor = predict.load_predictor(model)
            assert predict.predict_files(predictor, [image], f"{root}/predicted") == {}
        assert sorted(gfile.listdir(f"{root}/predicted")) == [
            "a_label.png", "a_overlay.png",
        ]  # fmt: skip
        # a second export replaces the first (the staged directory installed over it)
        saved_model.export_model(logdir, export_dir)
        assert sorted(gfile.listdir(f"{root}/export")) == [
            "model", "model.tflite", "model.tflite.json",
        ]  # fmt: skip
    finally:
        if gfile.exists(root):
            gfile.rmtree(root)
    local = sorted(os.listdir(tmp_path))
    assert local == ["synthetic"], local  # no `ram:` folder, nothing else local


def test_written_checkpoint_installs_and_restores_on_ram_filesystem():
    """write_model_checkpoint (the weight importer's) stages and installs remotely."""
    cfg = model_config("mobilenet_v2", 3, head="aspp", depth_multiplier=0.25)
    root = "ram://deeplab_dpc_test_written_checkpoint"
    try:
        model = build_model(cfg)
        for _ in range(2):  # the second replaces the first
            prefix = checkpoints.write_model_checkpoint(model, cfg, f"{root}/ck")
        assert prefix == f"{root}/ck/ckpt-0"
        assert gfile.listdir(root) == ["ck"]  # no staging directory left
        assert sorted(gfile.listdir(f"{root}/ck")) == [
            "checkpoint", "ckpt-0.data-00000-of-00001", "ckpt-0.index",
            artefacts.MODEL_CONFIG,
        ]  # fmt: skip
        restored, config, got = checkpoints.restore_model(f"{root}/ck")
        assert got == prefix and config == cfg
        for a, b in zip(model.weights, restored.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    finally:
        if gfile.exists(root):
            gfile.rmtree(root)
