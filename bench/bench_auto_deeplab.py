"""Auto-DeepLab search step: time and peak memory against L, F, crop and batch.

A benchmark, not a test: run it by hand (on a quiet machine) and copy the
table into g3doc/autodeeplab.md ("Memory"). One search step is what
`search.run_search` does per step: a weight step (forward, cross-entropy,
backward, momentum SGD) and an architecture step (forward, backward, Adam),
here on one fixed random batch, so the input pipeline is not measured.

Every case runs in its own subprocess, so that peak memory is its own: on a
GPU the allocator's peak (`tf.config.experimental.get_memory_info`), on CPU
the process's peak resident set (`ru_maxrss`) minus the resident set after
building and tracing (the activations and gradients of one step, not the
framework). `--recompute` cases wrap every cell in `tf.recompute_grad`.

Usage:
  python bench/bench_auto_deeplab.py                       # the default grid
  python bench/bench_auto_deeplab.py --cases=L3F4c65b2,L3F4c65b2r
  python bench/bench_auto_deeplab.py --cases=L12F8c321b2   # the paper (GPU)

A case is L<layers>F<filters>c<crop>b<batch>, with a trailing "r" for
recompute.
"""

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "cases",
    [
        "L3F4c65b2",
        "L3F4c65b2r",
        "L3F8c65b2",
        "L3F4c129b2",
        "L3F4c129b2r",
        "L4F4c65b2",
        "L3F4c65b4",
    ],
    "Cases L<layers>F<filters>c<crop>b<batch>[r].",
)
flags.DEFINE_integer("num_classes", 19, "Classes of the logits.")
flags.DEFINE_integer("warmup_steps", 2, "Untimed steps (tracing).")
flags.DEFINE_integer("steps", 3, "Timed steps.")
flags.DEFINE_string("one", None, "Internal: run one case in this process.")

_CASE = re.compile(r"^L(\d+)F(\d+)c(\d+)b(\d+)(r?)$")


def _parse(case):
    m = _CASE.match(case)
    if not m:
        raise ValueError(f"bad case {case!r} (expected e.g. L4F4c65b2 or L4F4c65b2r)")
    layers, filters, crop, batch = (int(g) for g in m.groups()[:4])
    return layers, filters, crop, batch, bool(m.group(5))


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(case):
    import tensorflow as tf

    from deeplab_dpc.search.auto_deeplab.supernet import AutoDeepLabSupernet

    layers, filters, crop, batch, recompute = _parse(case)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    model = AutoDeepLabSupernet(
        FLAGS.num_classes, num_layers=layers, filter_multiplier=filters,
        stem_filters=(64, 64, 128) if layers >= 12 else (16, 16, 32),
        recompute=recompute, bn_momentum=0.9,
    )  # fmt: skip
    images = tf.random.normal((batch, crop, crop, 3))
    labels = tf.random.uniform((batch, crop, crop), 0, FLAGS.num_classes, tf.int32)
    model(images[:1], training=False)
    sgd = tf.keras.optimizers.SGD(0.01, momentum=0.9)
    adam = tf.keras.optimizers.Adam(3e-3)

    def loss_fn():
        logits = model(images, training=True)
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        )

    @tf.function
    def step():
        for opt, variables in (
            (sgd, model.network_variables()),
            (adam, model.architecture_variables()),
        ):
            with tf.GradientTape() as tape:
                loss = loss_fn()
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    t0 = time.time()
    for _ in range(FLAGS.warmup_steps):
        float(step())
    trace_s = time.time() - t0
    base = _rss_mb()
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    times = []
    for _ in range(FLAGS.steps):
        t = time.time()
        float(step())
        times.append(time.time() - t)
    if gpu:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    else:
        peak = _rss_mb() - base
    params = sum(int(v.shape.num_elements()) for v in model.network_variables())
    return {
        "case": case, "layers": layers, "filters": filters, "crop": crop,
        "batch": batch, "recompute": recompute, "device": "GPU" if gpu else "CPU",
        "params": params, "warmup_s": round(trace_s, 1),
        "step_s": round(statistics.median(times), 3), "peak_mb": round(peak, 1),
    }  # fmt: skip


def main(argv):
    del argv
    if FLAGS.one:
        print("RESULT " + json.dumps(run_one(FLAGS.one)), flush=True)
        return
    for case in FLAGS.cases:
        _parse(case)
    print(
        "| case | L | F | crop | batch | recompute | params | step (s) | peak (MB) | device |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for case in FLAGS.cases:
        out = subprocess.run(
            [sys.executable, __file__, f"--one={case}", f"--steps={FLAGS.steps}",
             f"--warmup_steps={FLAGS.warmup_steps}", f"--num_classes={FLAGS.num_classes}"],
            capture_output=True, text=True,
        )  # fmt: skip
        lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not lines:
            print(f"| {case} | failed: {out.stderr.strip().splitlines()[-1:]} |")
            continue
        r = json.loads(lines[-1][len("RESULT ") :])
        print(
            f"| {r['case']} | {r['layers']} | {r['filters']} | {r['crop']} | {r['batch']} "
            f"| {'yes' if r['recompute'] else 'no'} | {r['params'] / 1e6:.2f}M "
            f"| {r['step_s']} | {r['peak_mb']} | {r['device']} |",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
