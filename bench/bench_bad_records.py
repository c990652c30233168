r"""What reading a corrupt shard costs (records/s, no decode); a benchmark, not a test.

    python bench/bench_bad_records.py [--num_records=2000] [--record_kib=64]

Writes one shard of `--num_records` random records of `--record_kib` KiB
(about the size of a CamVid JPEG + PNG label record) and reads it:

1. `TFRecordDataset`: plain TensorFlow, nothing checked beyond its CRCs;
2. `pipeline, clean shard`: our per-shard reader (`pipeline._read_shard`,
   `TFRecordDataset` with the scan that notices a shard cut short);
3. `pipeline, record 0 corrupt`: the same reader on the shard with the data
   of record 0 damaged, under `skip_bad_records`: every other record then
   comes through `record_reader.iter_frames` (Python, CRC32C per record);
4. `iter_frames loop`: the Python reader alone.

The median of `--repeats` runs is printed as a Markdown table.
"""

import os
import statistics
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deeplab_dpc.core import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads (--verbosity=1 brings its logging back)

import tensorflow as tf  # noqa: E402

from deeplab_dpc.data import pipeline, record_reader  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_records", 2000, "Records in the shard.")
flags.DEFINE_integer("record_kib", 64, "Size of each record in KiB.")
flags.DEFINE_integer("repeats", 3, "Runs per case; the median is reported.")


def _rate(fn, n):
    start = time.perf_counter()
    count = fn()
    elapsed = time.perf_counter() - start
    assert count == n, (count, n)
    return n / elapsed


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    n, size = FLAGS.num_records, FLAGS.record_kib * 1024
    tmp = tempfile.mkdtemp()
    clean = os.path.join(tmp, "clean.tfrecord")
    with tf.io.TFRecordWriter(clean) as writer:
        for _ in range(n):
            writer.write(rng.bytes(size))
    raw = bytearray(open(clean, "rb").read())
    raw[12 + size // 2] ^= 0xFF
    corrupt = os.path.join(tmp, "corrupt.tfrecord")
    open(corrupt, "wb").write(bytes(raw))

    def count(ds):
        return int(ds.reduce(np.int64(0), lambda c, _: c + 1))

    def shard_reader(path, expected):
        return pipeline._read_shard(
            tf.constant(path), tf.constant(n, tf.int64), tf.constant(False),
            True, None,
        )  # fmt: skip

    cases = {
        "TFRecordDataset": (lambda: count(tf.data.TFRecordDataset(clean)), n),
        "pipeline, clean shard": (lambda: count(shard_reader(clean, n)), n),
        "pipeline, record 0 corrupt": (lambda: count(shard_reader(corrupt, n)), n - 1),
        "iter_frames loop": (
            lambda: sum(f.kind is None for f in record_reader.iter_frames(corrupt)),
            n - 1,
        ),
    }
    print(f"{n} records of {FLAGS.record_kib} KiB, median of {FLAGS.repeats} runs\n")
    print("| case | records/s | MiB/s |\n| --- | ---: | ---: |")
    for name, (fn, expected) in cases.items():
        fn()  # warm-up
        rate = statistics.median(_rate(fn, expected) for _ in range(FLAGS.repeats))
        print(f"| {name} | {rate:.0f} | {rate * size / 2**20:.0f} |")


if __name__ == "__main__":
    app.run(main)
