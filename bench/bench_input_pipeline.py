"""Input pipeline throughput (images/s) on CamVid: augmented vs plain vs raw files.

A benchmark, not a test: run it by hand and copy the table into
g3doc/datasets.md ("Performance"). Cases, all batch `--batch_size`, same
`tf.data` settings (AUTOTUNE parallel calls, prefetch):

1. `train+aug`: our TFRecords, DeepLab training preprocessing (random scale
   0.5-2.0 step 0.25, pad, random crop `--crop_size`, flip, normalise).
2. `train, no aug`: the same pipeline with the scale fixed at 1.0 (pad, crop,
   flip and normalise remain: they cost little).
3. `eval`: our TFRecords, whole images padded to 385x481 (batch 1).
3b. `decode only`: records to decoded samples, through our checked decode
   (a failing record is named or skipped) and through a plain parallel map.
4. `raw files (tf.data)`: `tf.io.read_file` + decode of the source JPEG/PNG
   files, normalise, batch: no records, no augmentation.
5. `raw files (PIL loop)`: the same in a plain Python loop with PIL + numpy.

Usage:
  python bench/bench_input_pipeline.py --camvid_root=../shared/data/camvid
"""

import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deeplab_dpc.core import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads (--verbosity=1 brings its logging back)

import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from deeplab_dpc.data import pipeline, preprocess, records, registry, sources  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("camvid_root", "../shared/data/camvid", "CamVid source folder.")
flags.DEFINE_string(
    "tfrecord_dir", None, "CamVid TFRecords (default: convert to a temp dir)."
)
flags.DEFINE_integer("batch_size", 8, "Training batch size.")
flags.DEFINE_list("crop_size", ["321", "481"], "Training crop height,width.")
flags.DEFINE_integer("num_images", 400, "Images timed per case (after warm-up).")
flags.DEFINE_integer("warmup_batches", 3, "Batches read before timing starts.")
flags.DEFINE_integer("repeats", 3, "Rounds over all cases; the median is reported.")


def time_dataset(dataset, images_per_batch, num_images, warmup_batches):
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    batches = max(1, num_images // images_per_batch)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * images_per_batch / (time.perf_counter() - start)


def raw_file_dataset(root, batch_size):
    names = sources.camvid_items(root, "train")
    images = [item.image_path for item in names]
    labels = [item.label_path for item in names]

    def load(image_path, label_path):
        image = tf.io.decode_jpeg(tf.io.read_file(image_path), channels=3)
        label = tf.io.decode_png(tf.io.read_file(label_path), channels=1)
        return tf.cast(image, tf.float32) / 127.5 - 1.0, tf.cast(label, tf.int32)

    ds = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(len(images))
        .repeat()
    )
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def decode_only(record_dir, info, checked):
    """Records -> decoded samples, with our bad-record checks or a plain map."""
    files = records.list_shards(record_dir, "train")
    if checked:
        opts = {
            "is_training": False, "seed": None, "deterministic": True,
            "skip_bad_records": False, "num_readers": 4, "repeat": True,
            "bad_record_counter": None, "record_shard": None,
        }  # fmt: skip
        return pipeline._record_samples(files, info, opts).prefetch(tf.data.AUTOTUNE)
    ds = tf.data.TFRecordDataset(files).repeat()
    ds = ds.map(preprocess.decode_example, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def pil_loop(root, num_images):
    items = sources.camvid_items(root, "train")
    start = time.perf_counter()
    for index in range(num_images):
        item = items[index % len(items)]
        image = (
            np.asarray(Image.open(item.image_path).convert("RGB"), np.float32) / 127.5
            - 1.0
        )
        label = np.asarray(Image.open(item.label_path), np.int32)
        del image, label
    return num_images / (time.perf_counter() - start)


def make_cases(record_dir):
    """(name, callable returning images/s) for each case."""
    info = registry.get_dataset_info("camvid")
    crop = tuple(int(v) for v in FLAGS.crop_size)
    bs, n, warm = FLAGS.batch_size, FLAGS.num_images, FLAGS.warmup_batches

    def train(scale):
        return pipeline.build_dataset(
            record_dir, "train", info, is_training=True, batch_size=bs, crop_size=crop,
            min_scale_factor=scale[0], max_scale_factor=scale[1],
        )  # fmt: skip

    def timed(make, per_step):
        return lambda: time_dataset(make(), per_step, n, warm)

    def evaluation():
        return pipeline.build_dataset(
            record_dir, "train", info, is_training=False, repeat=True
        )

    return [
        (f"train+aug (crop {crop[0]}x{crop[1]}, batch {bs})", timed(lambda: train((0.5, 2.0)), bs)),
        ("train, no aug (scale 1.0)", timed(lambda: train((1.0, 1.0)), bs)),
        ("eval (whole image, padded to 385x481, batch 1)", timed(evaluation, 1)),
        ("decode only: records, checked (bad records named)", timed(lambda: decode_only(record_dir, info, True), 1)),
        ("decode only: records, plain parallel map", timed(lambda: decode_only(record_dir, info, False), 1)),
        (f"raw files (tf.data read + decode, batch {bs})", timed(lambda: raw_file_dataset(FLAGS.camvid_root, bs), bs)),
        ("raw files (PIL loop, 1 thread)", lambda: pil_loop(FLAGS.camvid_root, min(n, 200))),
    ]  # fmt: skip


def run_cases(record_dir):
    """Median, min and max images/s of each case over `--repeats` rounds."""
    cases = make_cases(record_dir)
    rates = {name: [] for name, _ in cases}
    for _ in range(FLAGS.repeats):
        for name, measure in cases:
            rates[name].append(measure())
    return [(name, float(np.median(r)), min(r), max(r)) for name, r in rates.items()]


def main(argv):
    del argv
    if not os.path.isdir(FLAGS.camvid_root):
        print(
            f"bench_input_pipeline: CamVid not found: {FLAGS.camvid_root}",
            file=sys.stderr,
        )
        sys.exit(2)
    with tempfile.TemporaryDirectory() as tmp:
        record_dir = FLAGS.tfrecord_dir
        if record_dir is None:
            record_dir = tmp
            sources.build_camvid(
                FLAGS.camvid_root, tmp, splits=["train"], log=lambda _: None
            )
        results = run_cases(record_dir)
    print(f"CPU cores visible: {os.cpu_count()}, TensorFlow {tf.__version__}")
    print(f"| case | images/s (median of {FLAGS.repeats}) | min - max |")
    print("| --- | ---: | ---: |")
    for name, median, low, high in results:
        print(f"| {name} | {median:.1f} | {low:.1f} - {high:.1f} |")


if __name__ == "__main__":
    app.run(main)
