r"""The accelerator path in one command: train step, proxy and export on this machine.

    python bench/device_check.py --output_json=device_check.json     # GPU: minutes; 2-core CPU: 27 min
    python bench/device_check.py --reduced                           # CPU, < 1 minute

On whatever accelerators TensorFlow finds (`tf.config`: GPUs, else the CPU)
this measures, in one process:

* the training step (`Trainer.make_train_step`, as `bench/bench_train_step.py`:
  forward, loss, backward, momentum SGD on one fixed random batch) without
  and with XLA, in float32, bf16 and fp16 mixed precision (fp16 needs a GPU:
  skipped on CPU, as train.py refuses it), and with `MirroredStrategy` over
  all GPUs (over the CPU when there is none: one replica);
* the proxy's candidates per hour (`proxy.train_proxy` on an in-memory cache
  of CamVid's shapes, batch 8 of 11x16x160 float16 features, 161x241 labels,
  the top-1 cell; train `--proxy_steps` steps and score the val split);
* the export's serving latency (`export.export_keras_model` to a SavedModel,
  then its `serving_default` signature on one uint8 image, as
  `bench/bench_export.py` part 1).

It writes one JSON of every figure (`--output_json`) and prints a table.
`--reduced` is the same on a tiny model (MobileNetV2 x0.25, 33x33 crops,
batch 2, 1 timed step; a 3x3 proxy cache of 3 steps; 33x33 export) without
the XLA cases (compiling the train step with XLA takes minutes on a 2-core
CPU; they are recorded as skipped): CI runs it (tests/test_device_check.py)
to keep the script working; its figures are not measurements. A case that
cannot run here is recorded with `status` "skipped: <why>" or "failed:
<error>" instead of figures. Not a test.
"""

import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deeplab_dpc import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads (--verbosity=1 brings its logging back)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from deeplab_dpc import common  # noqa: E402
from deeplab_dpc import spec as spec_lib  # noqa: E402
from deeplab_dpc.data import registry  # noqa: E402
from deeplab_dpc.model import build_model, model_config  # noqa: E402
from deeplab_dpc.search import proxy  # noqa: E402
from deeplab_dpc.search.cache import write_cache_from_arrays  # noqa: E402
from deeplab_dpc.training import options as options_lib  # noqa: E402
from deeplab_dpc.training import trainer as trainer_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_boolean("reduced", False, "Tiny model and few steps (CPU, CI).")
flags.DEFINE_string("output_json", None, "Write the figures here.")
flags.DEFINE_integer(
    "steps", None, "Timed train steps per case (default 10; reduced 2)."
)
flags.DEFINE_integer("proxy_steps", None, "Proxy steps per candidate (150; reduced 3).")

FULL = {
    "depth_multiplier": 1.0, "crop": 513, "batch": 8, "warmup": 2, "steps": 10,
    "num_classes": 19, "proxy_features": (11, 16, 160), "proxy_labels": (161, 241),
    "proxy_steps": 150, "proxy_examples": (64, 16), "export_crop": 513,
    "export_runs": 20,
}  # fmt: skip
REDUCED = {
    "depth_multiplier": 0.25, "crop": 33, "batch": 2, "warmup": 1, "steps": 1,
    "num_classes": 3, "proxy_features": (3, 3, 16), "proxy_labels": (33, 33),
    "proxy_steps": 3, "proxy_examples": (8, 4), "export_crop": 33, "export_runs": 3,
    "skip_xla": True,
}  # fmt: skip
PRECISIONS = (None, "bf16", "fp16")  # float32, then mixed precision


def device_info():
    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    return {
        "tensorflow": tf.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "gpus": names, "accelerator": "gpu" if gpus else "cpu",
    }  # fmt: skip


def _train_options(logdir, size, jit_compile, precision, strategy):
    return options_lib.train_options(
        logdir, train_crop_size=(size["crop"], size["crop"]),
        train_batch_size=size["batch"], jit_compile=jit_compile,
        mixed_precision=precision, distribution_strategy=strategy,
    )  # fmt: skip


def _batches(trainer, size):
    batch = {
        common.IMAGE: tf.random.uniform(
            [size["batch"], size["crop"], size["crop"], 3], -1.0, 1.0, seed=0
        ),
        common.LABEL: tf.random.uniform(
            [size["batch"], size["crop"], size["crop"], 1], 0, size["num_classes"],
            tf.int32, seed=1,
        ),
    }  # fmt: skip
    if trainer.replicas == 1:
        return lambda: batch
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    iterator = iter(trainer.strategy.experimental_distribute_dataset(dataset))
    return lambda: next(iterator)


def train_case(size, jit_compile, precision, strategy):
    """Figures of one training-step case (median of the timed steps)."""
    cfg = model_config(
        "mobilenet_v2", size["num_classes"], head="dpc", dpc_spec=spec_lib.TOP1,
        depth_multiplier=size["depth_multiplier"],
    )  # fmt: skip
    info = registry.custom_dataset_info("device_check", size["num_classes"])
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(trainer_lib.PRECISION_POLICIES[precision])
    try:
        with tempfile.TemporaryDirectory() as logdir:
            options = _train_options(logdir, size, jit_compile, precision, strategy)
            trainer = trainer_lib.Trainer(cfg, options, info)
            step, next_batch = trainer.make_train_step(), _batches(trainer, size)
            start = time.perf_counter()
            for _ in range(size["warmup"]):
                loss = float(step(next_batch())[1])
            warmup = time.perf_counter() - start
            times = []
            for _ in range(size["steps"]):
                start = time.perf_counter()
                loss = float(step(next_batch())[1])
                times.append(time.perf_counter() - start)
            replicas = trainer.replicas
    finally:
        keras.mixed_precision.set_global_policy(previous)
    median = statistics.median(times)
    return {
        "ms_per_step": 1000 * median, "images_per_s": size["batch"] / median,
        "warmup_s": warmup, "replicas": replicas, "loss": loss,
    }  # fmt: skip


def train_cases(size, gpus):
    """Every (strategy, XLA, precision) case, run or skipped with its reason."""
    cases = [("one_device", xla, p) for xla in (False, True) for p in PRECISIONS]
    cases.append(("mirrored", False, None))
    rows = []
    for strategy, xla, precision in cases:
        row = {
            "strategy": strategy, "xla": xla, "precision": precision or "fp32",
            "crop": size["crop"], "batch": size["batch"],
            "depth_multiplier": size["depth_multiplier"],
        }  # fmt: skip
        if precision == "fp16" and not gpus:
            row["status"] = "skipped: fp16 mixed precision needs a GPU"
        elif xla and size.get("skip_xla"):
            row["status"] = (
                "skipped: reduced mode (XLA compilation takes minutes on CPU)"
            )
        else:
            try:
                row.update(train_case(size, xla, precision, strategy), status="ok")
            except Exception as e:  # a case that fails here must not stop the rest
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                row["status"] = f"failed: {type(e).__name__}: {first[:300]}"
        rows.append(row)
        print(_train_row(row), flush=True)
    return rows


def proxy_case(size, tmp):
    """Seconds per proxy candidate and candidates per hour on a synthetic cache."""
    rng = np.random.default_rng(0)
    h, w, c = size["proxy_features"]

    def split(n):
        features = rng.normal(size=(n, h, w, c)).astype(np.float16)
        labels = rng.integers(0, 11, size=(n, *size["proxy_labels"])).astype(np.uint8)
        return features, labels

    n_train, n_val = size["proxy_examples"]
    info = {
        "backbone": {"model_variant": "mobilenet_v2", "output_stride": 16,
                     "depth_multiplier": 0.5},
        "num_classes": 11, "ignore_label": 255, "dtype": "float16",
    }  # fmt: skip
    cache = write_cache_from_arrays(
        os.path.join(tmp, "cache"), {"train": split(n_train), "val": split(n_val)}, info
    )
    out = proxy.train_proxy(
        spec_lib.TOP1, cache, steps=size["proxy_steps"], batch_size=min(8, n_train)
    )
    return {
        "seconds_per_candidate": out["seconds"], "train_seconds": out["train_seconds"],
        "eval_seconds": out["eval_seconds"], "candidates_per_hour": 3600 / out["seconds"],
        "steps": size["proxy_steps"], "features": [h, w, c],
        "labels": list(size["proxy_labels"]), "status": "ok",
    }  # fmt: skip


def export_case(size, tmp):
    """Median serving latency of the exported SavedModel on one uint8 image."""
    from deeplab_dpc.export import saved_model as export

    cfg = model_config(
        "mobilenet_v2", size["num_classes"], head="dpc", dpc_spec=spec_lib.TOP1,
        depth_multiplier=size["depth_multiplier"],
    )  # fmt: skip
    model = build_model(cfg)
    path = os.path.join(tmp, "saved_model")
    export.export_keras_model(model, cfg, path)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    crop = size["export_crop"]
    image = tf.constant(
        np.random.default_rng(0).integers(0, 256, (1, crop, crop, 3), dtype=np.uint8)
    )
    serve(ImageTensor=image)  # warm-up
    times = []
    for _ in range(size["export_runs"]):
        start = time.perf_counter()
        serve(ImageTensor=image)[export.OUTPUT_PREDICTIONS].numpy()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "median_ms": 1000 * median, "images_per_s": 1 / median, "crop": crop,
        "runs": len(times), "status": "ok",
    }  # fmt: skip


def _guarded(fn, *args):
    try:
        return fn(*args)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return {"status": f"failed: {type(e).__name__}: {first[:300]}"}


def _train_row(row):
    figures = (
        f"{row['ms_per_step']:.1f} | {row['images_per_s']:.2f} | {row['replicas']}"
        if row["status"] == "ok"
        else f"- | - | - ({row['status']})"
    )
    return (
        f"| train {row['strategy']} | {row['precision']} | {row['xla']} | {figures} |"
    )


def run(reduced):
    size = dict(REDUCED if reduced else FULL)
    if FLAGS.steps:
        size["steps"] = FLAGS.steps
    if FLAGS.proxy_steps:
        size["proxy_steps"] = FLAGS.proxy_steps
    device = device_info()
    print(f"device check ({'reduced' if reduced else 'full'}): {json.dumps(device)}")
    print("| case | precision | XLA | ms per step | images/s | replicas |")
    print("| --- | --- | --- | --- | --- | --- |")
    figures = {"mode": "reduced" if reduced else "full", "device": device}
    figures["train_step"] = train_cases(size, device["gpus"])
    with tempfile.TemporaryDirectory() as tmp:
        figures["proxy"] = _guarded(proxy_case, size, tmp)
        figures["export"] = _guarded(export_case, size, tmp)
    p, e = figures["proxy"], figures["export"]
    if p["status"] == "ok":
        print(
            f"proxy: {p['seconds_per_candidate']:.1f} s per candidate of {p['steps']}"
            f" steps, {p['candidates_per_hour']:.0f} candidates per hour"
        )
    if e["status"] == "ok":
        print(
            f"export: serving {e['median_ms']:.1f} ms per {e['crop']}x{e['crop']} image"
        )
    return figures


def main(argv):
    del argv
    figures = run(FLAGS.reduced)
    if FLAGS.output_json:
        tmp = FLAGS.output_json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(figures, f, indent=2)
        os.replace(tmp, FLAGS.output_json)


if __name__ == "__main__":
    app.run(main)
