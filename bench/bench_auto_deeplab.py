"""Auto-DeepLab search step: time and peak memory against L, F, crop and batch.

A benchmark, not a test: run it by hand (on a quiet machine) and copy the
table into g3doc/auto_deeplab.md ("Memory"). One search step is what
`search.AutoDeepLabSearcher` does per step, with its traced step function
(`AutoDeepLabSearcher.make_step`): a weight step (forward, cross-entropy, backward,
momentum SGD) and an architecture step (forward, backward, Adam), here on
one fixed random batch, so the input pipeline is not measured.

Every case runs in its own subprocess, so that peak memory is its own: on a
GPU the allocator's peak (`tf.config.experimental.get_memory_info`); on CPU,
where TensorFlow keeps no allocator statistics, the process's peak resident
set (`ru_maxrss`, "peak RSS", tracing included) and the peak resident set
of the timed steps alone (the kernel's VmHWM, reset through
/proc/self/clear_refs after the warm-up) minus the resident set before them
("step memory": what a step adds on top of the weights, optimizer slots and
graphs; the subprocesses run with MALLOC_MMAP_THRESHOLD_=65536 unless the
environment sets it, so that large freed buffers go back to the system and
the resident set between steps excludes the activations). A trailing "r" wraps every candidate cell in
`tf.recompute_grad`.

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
import types

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deeplab_dpc.core import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads (--verbosity=1 brings its logging back)

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


def _current_rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak_rss():
    """Resets the kernel's peak resident set (VmHWM) of this process (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_since_reset_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_one(case):
    import tempfile

    import tensorflow as tf

    from deeplab_dpc.search.auto_deeplab.options import search_options
    from deeplab_dpc.search.auto_deeplab.search import AutoDeepLabSearcher

    layers, filters, crop, batch, recompute = _parse(case)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if not gpu:  # as the searcher's graph_optimizer=auto on CPU
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    # what the searcher reads of a dataset
    info = types.SimpleNamespace(num_classes=FLAGS.num_classes, ignore_label=255)
    t0 = time.time()
    options = search_options(
        num_layers=layers, filter_multiplier=filters,
        stem_filters=(64, 64, 128) if layers >= 12 else (16, 16, 32),
        crop_size=(crop, crop), batch_size=batch, recompute=recompute,
        arch_learning_rate=3e-3, arch_batches=1,
    )  # fmt: skip
    searcher = AutoDeepLabSearcher(tempfile.mkdtemp(), options, info=info)
    model = searcher.model
    build_s = time.time() - t0
    step = searcher.make_step()
    images = tf.random.normal((batch, crop, crop, 3))
    labels = tf.random.uniform((batch, crop, crop, 1), 0, info.num_classes, tf.int32)
    weight, arch = tf.constant(False), tf.constant(True)

    def pair():
        float(step(images, labels, weight, weight))
        float(step(images, labels, arch, arch))

    t0 = time.time()
    step.get_concrete_function(images, labels, weight, weight)
    trace_s = time.time() - t0
    t0 = time.time()
    for _ in range(FLAGS.warmup_steps):
        pair()
    warmup_s = time.time() - t0
    base = _current_rss_mb()
    _reset_peak_rss()
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    times = []
    for _ in range(FLAGS.steps):
        t = time.time()
        pair()
        times.append(time.time() - t)
    peak = _rss_mb()
    if gpu:
        step_mb = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    else:
        step_mb = _peak_rss_since_reset_mb() - base
    params = sum(int(v.shape.num_elements()) for v in model.network_variables())
    return {
        "case": case, "layers": layers, "filters": filters, "crop": crop,
        "batch": batch, "recompute": recompute, "device": "GPU" if gpu else "CPU",
        "params": params, "build_s": round(build_s, 1), "trace_s": round(trace_s, 1),
        "warmup_s": round(warmup_s, 1), "step_s": round(statistics.median(times), 3),
        "peak_mb": round(peak, 1), "step_mb": round(step_mb, 1),
    }  # fmt: skip


def main(argv):
    del argv
    if FLAGS.one:
        print("RESULT " + json.dumps(run_one(FLAGS.one)), flush=True)
        return
    for case in FLAGS.cases:
        _parse(case)
    print(
        "| case | L | F | crop | batch | recompute | params | build (s) | trace (s) "
        "| first steps (s) | step (s) | step memory (MB) | peak RSS (MB) | device |"
    )
    print("|" + " --- |" * 14)
    # glibc keeps freed buffers below its mmap threshold (which grows up to
    # 32 MB as large buffers are freed) resident, so the resident set before the
    # timed steps would already hold the last step's activations and "step
    # memory" would read near zero; a fixed 64 KB threshold hands every large
    # freed buffer back. glibc reads it at start-up: the subprocess's
    # environment. A value the caller set wins.
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    for case in FLAGS.cases:
        out = subprocess.run(
            [sys.executable, __file__, f"--one={case}", f"--steps={FLAGS.steps}",
             f"--warmup_steps={FLAGS.warmup_steps}", f"--num_classes={FLAGS.num_classes}"],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not lines:
            print(f"| {case} | failed: {out.stderr.strip().splitlines()[-1:]} |")
            continue
        r = json.loads(lines[-1][len("RESULT ") :])
        print(
            f"| {r['case']} | {r['layers']} | {r['filters']} | {r['crop']} | {r['batch']} "
            f"| {'yes' if r['recompute'] else 'no'} | {r['params'] / 1e6:.2f}M "
            f"| {r['build_s']} | {r['trace_s']} | {r['warmup_s']} | {r['step_s']} "
            f"| {r['step_mb']} | {r['peak_mb']} | {r['device']} |",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
