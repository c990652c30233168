r"""Benchmark of exported models (not a test): images per second, batch 1.

    python bench/bench_export.py [--checkpoint_path=/tmp/train] \
        [--iterations=20] [--num_threads=2] [--output_json=/tmp/bench.json]

Part 1, at `--crop_size` (513x513): the Keras model (called in a
tf.function), the SavedModel (`serving_default`, uint8 input, padding and
normalisation in the graph) and our float TFLite export. The model is the
checkpoint's, else MobileNetV2 (depth 1.0, output stride 16) with the
paper's top-1 DPC and 21 classes, with random weights (speed does not depend
on the values).

Part 2, at 257x257: the architecture of DeepLab's released
`deeplabv3_257_mv_gpu.tflite` (MobileNetV2 depth 0.5, output stride 8,
ASPP-lite, 21 classes) exported by us, against that file, same interpreter
and threads, timed in alternating rounds so that load from other processes
hits both alike. Our file outputs int32 class ids (ArgMax inside); the
official one outputs logits, so it is timed alone and with the ArgMax an
app has to add (numpy), for the same output; our network converted the same
way but ending at the logits is timed too, for the same work.

Each figure is the median over `--iterations` timed runs after warm-up.
"""

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deeplab_dpc.core import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads (--verbosity=1 brings its logging back)

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from tensorflow.python.framework.convert_to_constants import (  # noqa: E402
    convert_variables_to_constants_v2,
)

from deeplab_dpc.export import saved_model as export  # noqa: E402
from deeplab_dpc.export import tflite as export_tflite  # noqa: E402
from deeplab_dpc.formats import dpc_spec as spec_lib  # noqa: E402
from deeplab_dpc.modeling import checkpoints  # noqa: E402
from deeplab_dpc.modeling.model import build_model, model_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = REPO.parent / "shared" / "models" / "deeplabv3_257_mv_gpu.tflite"

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_path", None, "Model for part 1 (default: random).")
flags.DEFINE_list("crop_size", ["513", "513"], "Part 1 image size.")
flags.DEFINE_integer("iterations", 20, "Timed runs per model.")
flags.DEFINE_integer("warmup", 3, "Untimed runs first.")
flags.DEFINE_integer("num_threads", 2, "TFLite interpreter threads.")
flags.DEFINE_string("official_tflite", str(OFFICIAL), "DeepLab's released file.")
flags.DEFINE_string("output_json", None, "Also write the results here.")
flags.DEFINE_list("parts", ["1", "2"], "Which parts to run.")


def time_runs(fn, iterations, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def tflite_runner(path, num_threads, argmax=False):
    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    (inp,), outputs = interpreter.get_input_details(), interpreter.get_output_details()
    shape = inp["shape"]
    image = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)

    def run():
        interpreter.set_tensor(inp["index"], image)
        interpreter.invoke()
        out = interpreter.get_tensor(outputs[0]["index"])
        return np.argmax(out, axis=-1) if argmax else out

    return run


def summary(times):
    median = statistics.median(times)
    return {
        "median_ms": 1000 * median,
        "images_per_s": 1.0 / median,
        "runs": len(times),
    }


def part1(model, config, crop_size, tmp):
    """Keras, SavedModel and TFLite at `crop_size`."""
    h, w = crop_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    normalized = tf.constant(image.astype(np.float32) / 127.5 - 1.0)
    keras_fn = tf.function(
        lambda x: tf.argmax(model(x, training=False)["semantic_logits"], axis=-1)
    )
    export_dir, tflite_path = (
        os.path.join(tmp, "saved_model"),
        os.path.join(tmp, "m.tflite"),
    )
    export.export_keras_model(
        model, config, export_dir, tflite_output=tflite_path,
        tflite_options={"crop_size": crop_size},
    )  # fmt: skip
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    image_tensor = tf.constant(image)
    runners = {
        "Keras model (tf.function)": lambda: keras_fn(normalized).numpy(),
        "SavedModel serving_default": lambda: serve(ImageTensor=image_tensor)[
            export.OUTPUT_PREDICTIONS
        ].numpy(),
        "our TFLite (float32)": tflite_runner(tflite_path, FLAGS.num_threads),
    }
    return {
        name: summary(time_runs(run, FLAGS.iterations, FLAGS.warmup))
        for name, run in runners.items()
    }


def logits_tflite(model, crop_size):
    """Our network converted like the export, but ending at the logits."""
    spec_ = tf.TensorSpec([1, *crop_size, 3], tf.float32)
    fn = tf.function(lambda x: model(x, training=False)["semantic_logits"])
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(spec_))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def part2(tmp):
    """Our TFLite export of the official file's architecture against that file."""
    if not os.path.exists(FLAGS.official_tflite):
        print(f"skipping part 2: {FLAGS.official_tflite} not found", file=sys.stderr)
        return {}
    config = model_config(
        "mobilenet_v2", 21, head="aspp", atrous_rates=[], output_stride=8,
        depth_multiplier=0.5,
    )  # fmt: skip
    ours = os.path.join(tmp, "aspp_lite_257.tflite")
    export.export_keras_model(
        build_model(config), config, tflite_output=ours,
        tflite_options={"crop_size": (257, 257)},
    )  # fmt: skip
    logits_only = os.path.join(tmp, "aspp_lite_257_logits.tflite")
    with open(logits_only, "wb") as f:
        f.write(logits_tflite(build_model(config), (257, 257)))
    runners = {
        "our TFLite 257 (ASPP-lite, ArgMax inside)": tflite_runner(
            ours, FLAGS.num_threads
        ),
        "our network, logits output (as official)": tflite_runner(
            logits_only, FLAGS.num_threads
        ),
        "official deeplabv3_257_mv_gpu.tflite (logits)": tflite_runner(
            FLAGS.official_tflite, FLAGS.num_threads
        ),
        "official + ArgMax in numpy (same output)": tflite_runner(
            FLAGS.official_tflite, FLAGS.num_threads, argmax=True
        ),
    }
    times = {name: [] for name in runners}
    for run in runners.values():
        time_runs(run, 0, FLAGS.warmup)
    for _ in range(FLAGS.iterations):  # alternate: equal exposure to load
        for name, run in runners.items():
            times[name] += time_runs(run, 1, 0)
    results = {name: summary(t) for name, t in times.items()}
    results["sizes_bytes"] = {
        "ours": os.path.getsize(ours),
        "official": os.path.getsize(FLAGS.official_tflite),
    }
    return results


def main(argv):
    del argv
    crop_size = export_tflite.parse_crop_size(FLAGS.crop_size)
    if FLAGS.checkpoint_path:
        model, config, _ = checkpoints.restore_model(FLAGS.checkpoint_path)
    else:
        config = model_config("mobilenet_v2", 21, head="dpc", dpc_spec=spec_lib.TOP1)
        model = build_model(config)
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible",
            "load_average_at_start": os.getloadavg(),
            "tensorflow": tf.__version__,
            "num_threads": FLAGS.num_threads,
            f"part1_{crop_size[0]}x{crop_size[1]}": (
                part1(model, config, crop_size, tmp) if "1" in FLAGS.parts else {}
            ),
            "part2_257x257": part2(tmp) if "2" in FLAGS.parts else {},
            "load_average_at_end": os.getloadavg(),
        }
    for part, rows in results.items():
        if not isinstance(rows, dict):
            print(f"{part}: {rows}")
            continue
        print(part)
        for name, row in rows.items():
            if "images_per_s" in row:
                print(
                    f"  {name:45s} {row['images_per_s']:8.2f} img/s "
                    f"({row['median_ms']:.1f} ms median)"
                )
            else:
                print(f"  {name}: {row}")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
