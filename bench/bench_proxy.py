r"""Benchmark of the proxy task's speed-up from cached backbone features.

    python bench/bench_proxy.py                       # synthetic, MobileNetV2 x0.5
    python bench/bench_proxy.py --checkpoint=workdir/search/pretrained_backbone \
        --steps=150 --repeats=3

Chen et al. (NeurIPS 2018, Sec. 3.3) cache the backbone's features so that
each candidate cell trains on them alone. This measures, side by side in one
process, the seconds per candidate (train `--steps` steps + score on val) of

* `cached`: `deeplab_dpc.search.proxy.train_proxy` on the feature cache, and
* `on the fly`: the same cell, optimiser, loss and steps, with the frozen
  backbone run on every batch of the input pipeline (train crops) and on the
  validation images (what the proxy would cost without the cache),

and prints the speed-up and the candidates per hour of the cached proxy. The
one-off cost of writing the cache is reported separately. Speed does not
depend on the weights' values, so without `--checkpoint` a random-weight
backbone checkpoint is written to a temporary directory. Not a test.
"""

import os
import tempfile
import time

from deeplab_dpc.core import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads (--verbosity=1 brings its logging back)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from deeplab_dpc.core import common  # noqa: E402
from deeplab_dpc.data import registry  # noqa: E402
from deeplab_dpc.data.pipeline import build_dataset  # noqa: E402
from deeplab_dpc.formats import dpc_spec as spec_lib  # noqa: E402
from deeplab_dpc.modeling.checkpoints import restore_model, write_model_checkpoint  # noqa: E402
from deeplab_dpc.modeling.model import build_model, model_config  # noqa: E402
from deeplab_dpc.search import cache as cache_lib  # noqa: E402
from deeplab_dpc.search import proxy  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "checkpoint", None, "Backbone checkpoint (default: random weights)."
)
flags.DEFINE_float("depth_multiplier", 0.5, "MobileNetV2 width of the random backbone.")
flags.DEFINE_string("dataset", "synthetic", "Dataset name.")
flags.DEFINE_string("dataset_dir", None, "Dataset shards (synthetic: generated).")
flags.DEFINE_string("spec", None, "Cell spec JSON (default: the paper's top-1 cell).")
flags.DEFINE_integer("steps", 150, "Training steps per candidate.")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_integer("repeats", 2, "Candidates timed per mode (after one warm-up).")
flags.DEFINE_string("workdir", None, "Where the cache goes (default: a temp dir).")


def _checkpoint(workdir, info):
    if FLAGS.checkpoint:
        return FLAGS.checkpoint
    config = model_config(
        "mobilenet_v2",
        info.num_classes,
        head="aspp",
        depth_multiplier=FLAGS.depth_multiplier,
    )
    return write_model_checkpoint(
        build_model(config), config, os.path.join(workdir, "random")
    )


def _on_the_fly(spec, backbone, info, num_classes, crop, output_stride):
    """Seconds of one candidate trained with the frozen backbone run per batch."""
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    channels = backbone.output[common.FEATURES].shape[-1]
    model = proxy.build_proxy_model(
        spec,
        channels,
        num_classes,
        output_stride,
        proxy.bn_momentum_for_steps(FLAGS.steps),
    )
    optimizer = keras.optimizers.SGD(
        keras.optimizers.schedules.PolynomialDecay(0.05, FLAGS.steps, power=0.9),
        momentum=0.9,
    )
    variables = model.trainable_variables

    @tf.function
    def step(images, labels):
        features = tf.stop_gradient(backbone(images, training=False)[common.FEATURES])
        with tf.GradientTape() as tape:
            logits = model(features, training=True)
            loss = proxy.segmentation_loss(logits, labels[..., 0], info.ignore_label)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    train = build_dataset(
        FLAGS.dataset_dir, "train", info, is_training=True, batch_size=FLAGS.batch_size,
        crop_size=crop, seed=0, deterministic=True,
    )  # fmt: skip
    for _, batch in zip(range(FLAGS.steps), train):
        step(batch[common.IMAGE], batch[common.LABEL])

    @tf.function
    def counts(images, labels):
        logits = model(
            backbone(images, training=False)[common.FEATURES], training=False
        )
        return proxy.confusion_matrix(
            logits, labels[..., 0], num_classes, info.ignore_label
        )

    total = np.zeros([num_classes, num_classes], np.int64)
    for batch in build_dataset(FLAGS.dataset_dir, "val", info, is_training=False):
        total += counts(batch[common.IMAGE], batch[common.LABEL]).numpy()
    proxy.mean_iou(total)
    return time.perf_counter() - start


def _time(fn, label):
    fn()  # warm-up: first-call costs (pipeline start, library init) not counted
    seconds = []
    for i in range(FLAGS.repeats):
        seconds.append(fn())
        print(f"  {label} candidate {i + 1}: {seconds[-1]:.1f} s", flush=True)
    return float(np.median(seconds))


def main(argv):
    del argv
    info = registry.get_dataset_info(FLAGS.dataset)
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="bench_proxy_")
    spec = spec_lib.load_spec(FLAGS.spec) if FLAGS.spec else spec_lib.TOP1
    crop = tuple(info.default_crop_size)
    checkpoint = _checkpoint(workdir, info)
    start = time.perf_counter()
    cache = cache_lib.write_feature_cache(
        os.path.join(workdir, "cache"), checkpoint, FLAGS.dataset_dir, info,
        crop_size=crop, batch_size=FLAGS.batch_size,
    )  # fmt: skip
    cache_seconds = time.perf_counter() - start
    model, _, _ = restore_model(checkpoint)
    backbone = model.get_layer(common.BACKBONE)
    print(
        f"cell {spec_lib.canonical_key(spec)}, {FLAGS.steps} steps, batch {FLAGS.batch_size}"
    )
    print(
        f"cache: {cache.count('train')} train / {cache.count('val')} val, {cache_seconds:.1f} s once"
    )

    def cached():
        keras.backend.clear_session()
        out = proxy.train_proxy(
            spec, cache, steps=FLAGS.steps, batch_size=FLAGS.batch_size
        )
        return out["seconds"]

    def fly():
        keras.backend.clear_session()
        return _on_the_fly(
            spec, backbone, info, cache.num_classes, crop, cache.output_stride
        )

    t_cached = _time(cached, "cached    ")
    t_fly = _time(fly, "on the fly")
    print(f"seconds per candidate: cached {t_cached:.1f}, on the fly {t_fly:.1f}")
    print(
        f"speed-up: {t_fly / t_cached:.2f}x; cached candidates per hour: {3600 / t_cached:.0f}"
    )


if __name__ == "__main__":
    app.run(main)
