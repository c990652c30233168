r"""The proxy's train step at CamVid cache shapes, today's path against the new ones.

    python bench/bench_proxy_speed.py                 # ~2 minutes on 2 cores
    python bench/bench_proxy_speed.py --rounds=5 --steps=30 --json=proxy_speed.json

One process, one synthetic in-memory cache of CamVid's shapes (batch 8 of
11x16x160 float16 features, 161x241 labels, 11 classes: the cache of
g3doc/camvid.md), the paper's top-1 cell (or `--spec`), the proxy's own
compiled step (`proxy._make_train_step`: gather a batch, forward, loss,
backward, SGD). Cases:

* `today`: logits upsampled to the labels, plain dilated convs, float32;
* `shortcuts`: exact shortcuts of degenerate atrous convs (layers/conv.py);
* `shortcuts, labels down`: and the loss on labels downsampled to the
  logits (`--proxy_upsample_logits=false`);
* `shortcuts, bf16` and `shortcuts, labels down, bf16`: and Keras'
  mixed_bfloat16 policy (`--proxy_compute_dtype=bfloat16`).

Steps are timed in rounds that visit every case in turn (so a load change
hits all cases alike); the table gives the median ms per step over rounds
and the speed-up over `today`. Speed does not depend on the values, so the
features are random. Not a test.
"""

import json
import statistics
import time
import types

from deeplab_dpc.core import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads (--verbosity=1 brings its logging back)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from deeplab_dpc.formats import dpc_spec as spec_lib  # noqa: E402
from deeplab_dpc.layers import conv as conv_lib  # noqa: E402
from deeplab_dpc.search import proxy  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("feature_shape", ["11", "16", "160"], "Cached feature h,w,c.")
flags.DEFINE_list("label_shape", ["161", "241"], "Cached label h,w.")
flags.DEFINE_integer("num_classes", 11, "Classes (CamVid: 11).")
flags.DEFINE_integer("batch_size", 8, "Proxy batch size.")
flags.DEFINE_integer("num_examples", 64, "Examples in the synthetic in-memory cache.")
flags.DEFINE_string("spec", None, "Cell spec JSON (default: the paper's top-1 cell).")
flags.DEFINE_integer("steps", 20, "Steps timed per case per round.")
flags.DEFINE_integer("rounds", 3, "Rounds over all cases (after one warm-up).")
flags.DEFINE_boolean("jit_compile", False, "Compile the steps with XLA.")
flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")

# name: (shortcuts, upsample_logits, compute_dtype)
CASES = {
    "today": (False, True, "float32"),
    "shortcuts": (True, True, "float32"),
    "shortcuts, labels down": (True, False, "float32"),
    "shortcuts, bf16": (True, True, "bfloat16"),
    "shortcuts, labels down, bf16": (True, False, "bfloat16"),
}


def synthetic_data(feature_shape, label_shape, num_classes, n, batch_size, seed=0):
    """An in-memory stand-in of `proxy._TrainData` with random features and labels."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, *feature_shape)).astype(np.float16)
    labels = rng.integers(0, num_classes, size=(n, *label_shape)).astype(np.uint8)
    labels[:, :4] = 255  # some ignored pixels, as real labels have
    data = types.SimpleNamespace(
        in_memory=True, features=tf.constant(features), labels=tf.constant(labels)
    )
    batches = [tf.constant(rng.choice(n, batch_size, replace=False)) for _ in range(16)]
    return data, batches


def make_step(spec, data, channels, num_classes, case, jit_compile):
    """A compiled proxy train step for `case`, traced (and warmed up) now."""
    shortcuts, upsample_logits, compute_dtype = case
    keras.utils.set_random_seed(0)
    model = proxy._build_with_policy(
        compute_dtype, spec, channels, num_classes, 16, proxy.bn_momentum_for_steps(300)
    )
    optimizer = keras.optimizers.SGD(0.01, momentum=proxy.MOMENTUM)
    step = proxy._make_train_step(
        model, optimizer, data, 255, jit_compile, upsample_logits
    )
    index = tf.constant(np.arange(int(data.labels.shape[0]))[: FLAGS.batch_size])
    if shortcuts:
        step(index)
    else:
        with conv_lib.no_shortcuts():
            step(index)  # traced here: the plain convs
    return step


def time_steps(step, batches, steps):
    start = time.perf_counter()
    for i in range(steps):
        loss = step(batches[i % len(batches)])
    float(loss)  # waits for the last step
    return (time.perf_counter() - start) / steps * 1000.0


def main(argv):
    del argv
    # Every case traces its own step on purpose: TF's "triggered tf.function
    # retracing" warning (printed twice, by its logger and absl's) is expected.
    tf.get_logger().setLevel("ERROR")
    feature_shape = [int(v) for v in FLAGS.feature_shape]
    label_shape = [int(v) for v in FLAGS.label_shape]
    spec = spec_lib.load_spec(FLAGS.spec) if FLAGS.spec else spec_lib.TOP1
    data, batches = synthetic_data(
        feature_shape, label_shape, FLAGS.num_classes, FLAGS.num_examples,
        FLAGS.batch_size,
    )  # fmt: skip
    steps = {
        name: make_step(
            spec, data, feature_shape[-1], FLAGS.num_classes, case, FLAGS.jit_compile
        )
        for name, case in CASES.items()
    }
    for step in steps.values():
        time_steps(step, batches, 3)  # warm-up
    times = {name: [] for name in CASES}
    for _ in range(FLAGS.rounds):
        for name, step in steps.items():
            times[name].append(time_steps(step, batches, FLAGS.steps))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"Proxy train step, batch {FLAGS.batch_size} of {'x'.join(FLAGS.feature_shape)}"
        f" features, {'x'.join(FLAGS.label_shape)} labels, {FLAGS.num_classes} classes,"
        f" XLA {FLAGS.jit_compile}; median of {FLAGS.rounds} rounds of {FLAGS.steps}"
        " steps\n"
    )
    print("| case | ms per step | speed-up vs today |\n| --- | --- | --- |")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.1f} | {medians['today'] / ms:.2f}x |")
    if FLAGS.json:
        figures = {
            "ms_per_step": medians, "rounds_ms": times,
            "speedup": {n: medians["today"] / ms for n, ms in medians.items()},
            "feature_shape": feature_shape, "label_shape": label_shape,
            "batch_size": FLAGS.batch_size, "jit_compile": FLAGS.jit_compile,
        }  # fmt: skip
        with open(FLAGS.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    app.run(main)
