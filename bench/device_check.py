r"""The one command to run on a lent GPU: what this project does there, inside 10 minutes.

    DEEPLAB_DPC_TENSORFLOW=cuda pip install -e .
    python bench/device_check.py                       # GPU: under 10 minutes
    python bench/device_check.py --reduced             # CPU, tiny sizes (CI)
    python bench/device_check.py --allow_cpu           # the full sizes on CPU (hours)

Preflight (seconds): prints the TensorFlow build (CUDA build or not, its CUDA
and cuDNN versions) and every GPU TensorFlow sees (name, compute capability,
memory). With no GPU visible it prints one line and exits with code 2, unless
`--allow_cpu` or `--reduced` asks for the CPU: a CPU-only TensorFlow, a
driver TensorFlow cannot load or `CUDA_VISIBLE_DEVICES=""` would otherwise
measure the CPU and report it as the device.

Then the cases, most valuable first, each in its own subprocess (so that
its peak memory is its own and a case past its budget can be stopped) with
its own time budget; a case whose budget no longer fits in what is left of
`--budget_s` is recorded as "skipped: ..." with the reason, one that runs
past its budget is stopped and recorded so. `--output_json` is rewritten
(atomically) after every case, so a run cut at a time limit keeps every case
before the cut. Per case: `compile_s` (the first call: tracing, and XLA
compilation where on), `ms_per_step` (median of the timed steps),
`images_per_s`, and the peak device memory (`peak_device_mb`: the GPU
allocator's peak, `tf.config.experimental.get_memory_info`; on CPU, which
keeps no allocator statistics, `peak_host_rss_mb`, the process's peak
resident set).

1. `train_fp32`: the train step (`Trainer.make_train_step`: forward, loss,
   backward, momentum SGD on one fixed random batch) of MobileNetV2 + the
   top-1 DPC at 513x513, batch 8, float32, no XLA; then the placement check:
   every op type of the traced step (its function library included) looked
   up in TensorFlow's kernel registry, naming those without a kernel for the
   device, and one step traced under `tf.device(<device>)` with soft
   placement off, whose error names an op that cannot run there.
2. `train_bf16`, `train_fp16` (GPU only, as train.py), then the three with
   XLA (`train_fp32_xla`, ...).
3. `auto_deeplab_L12F8`: the Auto-DeepLab search step (a weight step and an
   architecture step) at the paper's L = 12, F = 8, 321x321, batch 2, with the
   search's own settings, through `bench/bench_auto_deeplab.py --one`
   (the step memory every PyTorch port runs out of).
4. `input_pipeline`: the training input pipeline (`pipeline.build_dataset`,
   DeepLab's augmentation, 513 crops, batch 8) on generated Cityscapes-size
   records (1024x2048 PNG images and labels), on one core (a private
   one-thread pool: images/s per core) and on all cores; `end_to_end`: that
   pipeline feeding the `train_fp32` step.
5. `xception71_769`: Xception-71 + top-1 DPC at 769x769, batch 4, float32.
6. `proxy`: the proxy task (`proxy.train_proxy`, top-1 cell, batch 8 of
   11x16x160 float16 features, 161x241 labels: CamVid's cache shapes) at
   150 steps, and at 30K steps extrapolated from the per-step time of a
   second, longer run: candidates per GPU-hour at each.
7. `export`: serving latency of the exported SavedModel on one 513x513 uint8 image.
8. `mirrored`: the fp32 train step under `MirroredStrategy` over every GPU.

`--reduced` runs the same cases on tiny sizes (MobileNetV2 x0.25 at 33x33,
batch 2; Auto-DeepLab L = 2, F = 4 at 33x33; 64x128 records; a 3x3 proxy
cache) without XLA (compiling with XLA takes minutes on a 2-core CPU):
tests/test_device_check.py runs it to keep the script working; its figures
are not measurements. Not a test.
"""

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

from deeplab_dpc.core import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads (--verbosity=1 brings its logging back)

from deeplab_dpc.core import artefacts  # noqa: E402  (TensorFlow-free)

FLAGS = flags.FLAGS
flags.DEFINE_boolean("reduced", False, "Tiny sizes on whatever device (CPU, CI).")
flags.DEFINE_boolean(
    "allow_cpu", False, "Run on the CPU when no GPU is visible (else exit 2)."
)
flags.DEFINE_string("output_json", "device_check.json", "Figures, rewritten per case.")
flags.DEFINE_float("budget_s", 540.0, "Seconds for all cases (preflight excluded).")
flags.DEFINE_list("cases", None, "Run only these cases (default: all, in order).")
flags.DEFINE_float(
    "case_budget_s", None, "Every case's budget in seconds (default: its own)."
)
flags.DEFINE_integer(
    "steps", None, "Timed train steps per case (default 10; reduced 2)."
)
flags.DEFINE_string("one", None, "Internal: run this case in this process.")
flags.DEFINE_string("one_json", None, "Internal: where --one writes its figures.")

FULL = {
    "depth_multiplier": 1.0, "crop": 513, "batch": 8, "warmup": 2, "steps": 10,
    "num_classes": 19, "xception_crop": 769, "xception_batch": 4,
    "auto_deeplab": "L12F8c321b2", "records": (1024, 2048), "num_records": 32,
    "pipeline_images": 48, "proxy_features": (11, 16, 160),
    "proxy_labels": (161, 241), "proxy_steps": (150, 450), "proxy_examples": (64, 16),
    "export_runs": 20,
}  # fmt: skip
REDUCED = {
    "depth_multiplier": 0.25, "crop": 33, "batch": 2, "warmup": 1, "steps": 2,
    "num_classes": 3, "xception_crop": 33, "xception_batch": 1,
    "auto_deeplab": "L2F4c33b2", "records": (64, 128), "num_records": 4,
    "pipeline_images": 4, "proxy_features": (3, 3, 16), "proxy_labels": (33, 33),
    "proxy_steps": (3, 6), "proxy_examples": (8, 4), "export_runs": 3,
    "skip_xla": True,
}  # fmt: skip
# (case, budget in seconds at full size, at reduced size), most valuable first.
CASES = (
    ("train_fp32", 120, 150), ("train_bf16", 60, 90), ("train_fp16", 60, 90),
    ("train_fp32_xla", 90, 0), ("train_bf16_xla", 90, 0), ("train_fp16_xla", 90, 0),
    ("auto_deeplab_L12F8", 150, 150), ("input_pipeline", 90, 120),
    ("end_to_end", 90, 120), ("xception71_769", 90, 150), ("proxy", 90, 120),
    ("export", 60, 120), ("mirrored", 60, 90),
)  # fmt: skip
BUDGETS = {name: (full, reduced) for name, full, reduced in CASES}
TRAIN_CASES = {
    "train_fp32": (None, False), "train_bf16": ("bf16", False),
    "train_fp16": ("fp16", False), "train_fp32_xla": (None, True),
    "train_bf16_xla": ("bf16", True), "train_fp16_xla": ("fp16", True),
}  # fmt: skip


# --- Preflight (parent process) ----------------------------------------------


def _gpu_memory_mb():
    """Total memory per GPU from nvidia-smi (None without it); no CUDA context here."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        return [float(x) for x in out.split()]
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def device_info():
    """The TensorFlow build and the GPUs it sees (no GPU memory is taken)."""
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    gpus = []
    memory = _gpu_memory_mb()
    for index, gpu in enumerate(tf.config.list_physical_devices("GPU")):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append({
            "name": details.get("device_name", gpu.name),
            "compute_capability": list(details.get("compute_capability") or ()),
            "memory_mb": memory[index] if memory and index < len(memory) else None,
        })  # fmt: skip
    return {
        "tensorflow": tf.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "cuda_build": bool(build.get("is_cuda_build")),
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "gpus": gpus, "accelerator": "gpu" if gpus else "cpu",
    }  # fmt: skip


def _no_gpu_line(device):
    build = (
        f"a CUDA build (CUDA {device['cuda_version']}, cuDNN {device['cudnn_version']})"
        if device["cuda_build"]
        else "a CPU-only build"
    )
    hint = (
        "check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"
        if device["cuda_build"]
        else "install the CUDA build: DEEPLAB_DPC_TENSORFLOW=cuda pip install -e ."
    )
    return (
        f"device_check: no GPU visible to TensorFlow {device['tensorflow']} ({build}); "
        f"{hint}, or pass --allow_cpu (or --reduced) to run on the CPU"
    )


def _print_device(device):
    print(
        f"TensorFlow {device['tensorflow']} (Python {device['python']}, "
        f"{device['machine']}, {device['cpu_count']} CPUs): "
        + (
            f"CUDA build, CUDA {device['cuda_version']}, cuDNN {device['cudnn_version']}"
            if device["cuda_build"]
            else "CPU-only build"
        )
    )
    for i, gpu in enumerate(device["gpus"]):
        memory = (
            f"{gpu['memory_mb'] / 1024:.1f} GiB" if gpu["memory_mb"] else "memory ?"
        )
        cc = ".".join(str(x) for x in gpu["compute_capability"]) or "?"
        print(f"GPU:{i}: {gpu['name']}, compute capability {cc}, {memory}")
    if not device["gpus"]:
        print("no GPU: running on the CPU")


# --- The cases (one per subprocess) ------------------------------------------


def _peak_memory(gpu):
    import tensorflow as tf

    figures = {
        "peak_host_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    }
    if gpu:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
        figures["peak_device_mb"] = peak / 2**20
    else:
        figures["peak_device_mb"] = None  # the CPU keeps no allocator statistics
    return figures


def _timed(fn, warmup, steps, images):
    """compile_s (first call), the other warm-up calls, then `steps` timed calls."""
    start = time.perf_counter()
    fn()
    compile_s = time.perf_counter() - start
    for _ in range(warmup - 1):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "compile_s": compile_s, "ms_per_step": 1000 * median,
        "images_per_s": images / median, "timed_steps": steps,
    }  # fmt: skip


def _model_cfg(size, variant="mobilenet_v2"):
    from deeplab_dpc.formats import dpc_spec as spec_lib
    from deeplab_dpc.modeling.model import model_config

    extra = {"depth_multiplier": size["depth_multiplier"]}
    if variant != "mobilenet_v2":
        extra = {}
    return model_config(
        variant, size["num_classes"], head="dpc", dpc_spec=spec_lib.TOP1, **extra
    )


def _trainer(size, logdir, precision=None, xla=False, strategy="one_device",
             variant="mobilenet_v2", crop=None, batch=None):  # fmt: skip
    from deeplab_dpc.data import registry
    from deeplab_dpc.training import options as options_lib
    from deeplab_dpc.training import trainer as trainer_lib

    crop, batch = crop or size["crop"], batch or size["batch"]
    options = options_lib.train_options(
        logdir, train_crop_size=(crop, crop), train_batch_size=batch,
        jit_compile=xla, mixed_precision=precision, distribution_strategy=strategy,
    )  # fmt: skip
    info = registry.custom_dataset_info("device_check", size["num_classes"])
    return trainer_lib.Trainer(_model_cfg(size, variant), options, info)


def _random_batch(size, crop, batch):
    import tensorflow as tf

    from deeplab_dpc.core import common

    return {
        common.IMAGE: tf.random.uniform([batch, crop, crop, 3], -1.0, 1.0, seed=0),
        common.LABEL: tf.random.uniform(
            [batch, crop, crop, 1], 0, size["num_classes"], tf.int32, seed=1
        ),
    }


def _next_batch(trainer, batch):
    import tensorflow as tf

    if trainer.replicas == 1:
        return lambda: batch
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    iterator = iter(trainer.strategy.experimental_distribute_dataset(dataset))
    return lambda: next(iterator)


def placement_check(trainer, batch, device_type):
    """Op types of the traced step without a `device_type` kernel; a pinned, strict run."""
    import tensorflow as tf
    from tensorflow.python.framework import kernels

    step = trainer.make_train_step()
    graph_def = step.get_concrete_function(batch).graph.as_graph_def()
    functions = {f.signature.name for f in graph_def.library.function}
    op_types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        op_types.update(node.op for node in function.node_def)
    op_types -= functions  # calls of library functions, not ops
    missing = []
    for op in sorted(op_types):
        devices = {
            k.device_type for k in kernels.get_registered_kernels_for_op(op).kernel
        }
        if devices and not devices & {device_type, "DEFAULT"}:
            missing.append(op)
    # Soft placement off: an op pinned to the device without a kernel there
    # fails instead of silently running on the host.
    tf.config.set_soft_device_placement(False)
    try:
        with tf.device(f"/{device_type}:0"):
            strict = trainer.make_train_step()
            float(strict(batch)[1])
        strict_run = "ok"
    except Exception as e:  # the error names the op
        strict_run = f"failed: {type(e).__name__}: {_first_line(e)}"
    finally:
        tf.config.set_soft_device_placement(True)
    return {
        "device_type": device_type, "op_types": len(op_types),
        "ops_without_kernel": missing, "strict_placement_run": strict_run,
    }  # fmt: skip


def train_case(name, size, gpu, tmp):
    import keras

    from deeplab_dpc.training import trainer as trainer_lib

    precision, xla = TRAIN_CASES.get(name, (None, False))
    if precision == "fp16" and not gpu:
        return {"status": "skipped: fp16 mixed precision needs a GPU"}
    if xla and size.get("skip_xla"):
        return {
            "status": "skipped: reduced mode (XLA compilation takes minutes on CPU)"
        }
    strategy = "mirrored" if name == "mirrored" else "one_device"
    variant, crop, batch = "mobilenet_v2", size["crop"], size["batch"]
    if name == "xception71_769":
        variant, crop, batch = (
            "xception_71",
            size["xception_crop"],
            size["xception_batch"],
        )
    keras.mixed_precision.set_global_policy(trainer_lib.PRECISION_POLICIES[precision])
    trainer = _trainer(size, tmp, precision, xla, strategy, variant, crop, batch)
    step, batch_tensors = trainer.make_train_step(), _random_batch(size, crop, batch)
    next_batch = _next_batch(trainer, batch_tensors)
    figures = _timed(
        lambda: float(step(next_batch())[1]), size["warmup"], size["steps"], batch
    )
    figures.update(
        model=variant, crop=crop, batch=batch, precision=precision or "fp32", xla=xla,
        strategy=strategy, replicas=trainer.replicas,
        loss=float(step(next_batch())[1]), **_peak_memory(gpu),
    )  # fmt: skip
    if name == "train_fp32":
        figures["placement"] = placement_check(
            trainer, batch_tensors, "GPU" if gpu else "CPU"
        )
    return figures


def _write_records(size, directory):
    """Cityscapes-size records: PNG images and labels of `size["records"]`."""
    import numpy as np

    from deeplab_dpc.data import records

    h, w = size["records"]
    rng = np.random.default_rng(0)
    examples = []
    for i in range(size["num_records"]):
        # Smooth content (PNG compresses it as it does photos) plus noise.
        yy, xx = np.mgrid[0:h, 0:w]
        base = (np.sin(xx / (17 + i)) + np.cos(yy / 23)) * 60 + 128
        image = np.clip(base[..., None] + rng.normal(0, 8, (h, w, 3)), 0, 255)
        label = ((xx // 128 + yy // 128 + i) % size["num_classes"]).astype(np.uint8)
        examples.append(records.make_example(
            records.encode_png(image.astype(np.uint8)), "png", f"{i:06d}.png", h, w,
            records.encode_png(label),
        ))  # fmt: skip
    records.write_shards(examples, directory, "train", 4)


def _train_dataset(size, directory, threads=None):
    import tensorflow as tf

    from deeplab_dpc.data import pipeline, registry

    info = registry.custom_dataset_info("device_check", size["num_classes"])
    dataset = pipeline.build_dataset(
        directory, "train", info, is_training=True, batch_size=size["batch"],
        crop_size=(size["crop"], size["crop"]), seed=0,
    )  # fmt: skip
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        dataset = dataset.with_options(options)
    return dataset


def input_case(size, tmp):
    """The training pipeline's images/s on one core and on all of them."""
    _write_records(size, os.path.join(tmp, "records"))
    figures = {
        "record_size": list(size["records"]), "crop": size["crop"],
        "batch": size["batch"], "cores": os.cpu_count(),
    }  # fmt: skip
    for key, threads in (("one_core", 1), ("all_cores", None)):
        iterator = iter(_train_dataset(size, os.path.join(tmp, "records"), threads))
        next(iterator)  # warm-up: the first shards open, buffers fill
        batches = max(1, size["pipeline_images"] // size["batch"])
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
        figures[f"{key}_images_per_s"] = batches * size["batch"] / seconds
    figures["images_per_s"] = figures["all_cores_images_per_s"]
    figures.update(_peak_memory(False))
    figures["cpu_ms_per_image_one_core"] = 1000 / figures["one_core_images_per_s"]
    return figures


def end_to_end_case(size, gpu, tmp):
    """The pipeline feeding the fp32 train step: images/s of the whole loop."""
    import tensorflow as tf

    _write_records(size, os.path.join(tmp, "records"))
    trainer = _trainer(size, os.path.join(tmp, "logdir"))
    step = trainer.make_train_step()
    dataset = _train_dataset(size, os.path.join(tmp, "records"))
    if gpu:
        dataset = dataset.apply(tf.data.experimental.prefetch_to_device("/GPU:0"))
    iterator = iter(dataset)
    figures = _timed(
        lambda: float(step(next(iterator))[1]), size["warmup"], size["steps"],
        size["batch"],
    )  # fmt: skip
    figures.update(crop=size["crop"], batch=size["batch"], **_peak_memory(gpu))
    return figures


def auto_deeplab_case(size):
    """bench_auto_deeplab.py --one: the search's own step, in its own subprocess."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "bench_auto_deeplab.py"),
         f"--one={size['auto_deeplab']}", "--warmup_steps=1",
         f"--steps={min(size['steps'], 3)}"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if not lines:
        tail = out.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"bench_auto_deeplab exit {out.returncode}: {tail[0]}")
    r = json.loads(lines[-1][len("RESULT ") :])
    step_s = r["step_s"]  # a weight step and an architecture step
    return {
        "case": r["case"], "compile_s": r["trace_s"] + r["warmup_s"],
        "ms_per_step": 1000 * step_s, "images_per_s": 2 * r["batch"] / step_s,
        "peak_device_mb": r["step_mb"] if r["device"] == "GPU" else None,
        "step_mb": r["step_mb"], "peak_host_rss_mb": r["peak_mb"],
        "params": r["params"], "device": r["device"],
        "note": "ms_per_step: one weight step and one architecture step",
    }  # fmt: skip


def proxy_case(size, gpu, tmp):
    """Proxy candidates per hour at 150 steps, and at 30K from the per-step time."""
    import numpy as np

    from deeplab_dpc.formats import dpc_spec as spec_lib
    from deeplab_dpc.search import proxy
    from deeplab_dpc.search.cache import write_cache_from_arrays

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
    short, long = size["proxy_steps"]
    batch = min(8, n_train)
    first = proxy.train_proxy(spec_lib.TOP1, cache, steps=short, batch_size=batch)
    second = proxy.train_proxy(spec_lib.TOP1, cache, steps=long, batch_size=batch)
    per_step = (second["train_seconds"] - first["train_seconds"]) / (long - short)
    if per_step <= 0:  # timing noise (a loaded host): the longer run's mean
        per_step = second["train_seconds"] / long
    seconds_30k = first["seconds"] + (30000 - short) * per_step
    return {
        "compile_s": first["train_seconds"] - short * per_step,
        "ms_per_step": 1000 * per_step, "images_per_s": batch / per_step if per_step else None,
        "seconds_per_candidate_150": first["seconds"],
        "candidates_per_hour_150": 3600 / first["seconds"],
        "seconds_per_candidate_30k": seconds_30k,
        "candidates_per_hour_30k": 3600 / seconds_30k,
        "steps": [short, long], "features": [h, w, c],
        "labels": list(size["proxy_labels"]), **_peak_memory(gpu),
        "note": (f"30K extrapolated: the {short}-step candidate plus 30000-{short} "
                 f"steps at the per-step time of a {long}-step run less it"),
    }  # fmt: skip


def export_case(size, gpu, tmp):
    """Median serving latency of the exported SavedModel on one uint8 image."""
    import numpy as np
    import tensorflow as tf

    from deeplab_dpc.export import saved_model as export
    from deeplab_dpc.modeling.model import build_model

    cfg = _model_cfg(size)
    path = os.path.join(tmp, "saved_model")
    export.export_keras_model(build_model(cfg), cfg, path)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    crop = size["crop"]
    image = tf.constant(
        np.random.default_rng(0).integers(0, 256, (1, crop, crop, 3), dtype=np.uint8)
    )
    figures = _timed(
        lambda: serve(ImageTensor=image)[export.OUTPUT_PREDICTIONS].numpy(),
        1, size["export_runs"], 1,
    )  # fmt: skip
    figures.update(crop=crop, **_peak_memory(gpu))
    return figures


def run_case(name, reduced):
    """Figures of case `name` in this process (the child)."""
    import tensorflow as tf

    for device in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(device, True)
    size = dict(REDUCED if reduced else FULL)
    if FLAGS.steps:
        size["steps"] = FLAGS.steps
    gpu = bool(tf.config.list_physical_devices("GPU"))
    with tempfile.TemporaryDirectory() as tmp:
        if name in TRAIN_CASES or name in ("xception71_769", "mirrored"):
            return train_case(name, size, gpu, tmp)
        if name == "auto_deeplab_L12F8":
            return auto_deeplab_case(size)
        if name == "input_pipeline":
            return input_case(size, tmp)
        if name == "end_to_end":
            return end_to_end_case(size, gpu, tmp)
        if name == "proxy":
            return proxy_case(size, gpu, tmp)
        if name == "export":
            return export_case(size, gpu, tmp)
    raise ValueError(f"unknown case {name!r}")


# --- The parent: budgets, subprocesses, JSON after every case ----------------


def _first_line(e):
    text = str(e).strip()
    return (text.splitlines()[0] if text else "")[:300]


def _run_child(name, reduced, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "case.json")
        command = [sys.executable, os.path.abspath(__file__), f"--one={name}",
                   f"--one_json={out}"] + (["--reduced"] if reduced else [])  # fmt: skip
        if FLAGS.steps:
            command.append(f"--steps={FLAGS.steps}")
        start = time.perf_counter()
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return {"status": f"skipped: stopped at its budget of {timeout:.0f} s"}
        wall = time.perf_counter() - start
        if os.path.exists(out):
            with open(out) as f:
                figures = json.load(f)
            figures.setdefault("status", "ok")
            figures["wall_s"] = wall
            return figures
        tail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        return {"status": f"failed: {tail[0][:300]}", "wall_s": wall}


def _row(name, r):
    if r.get("status") != "ok":
        return f"| {name} | - | - | - | - | {r['status']} |"
    mem = r.get("peak_device_mb")
    mem = (
        f"{mem:.0f}" if mem is not None else f"host {r.get('peak_host_rss_mb', 0):.0f}"
    )
    compile_s = r.get("compile_s")
    ms = r.get("ms_per_step")
    ips = r.get("images_per_s")
    return (
        (
            f"| {name} | {compile_s:.1f} | "
            if compile_s is not None
            else f"| {name} | - | "
        )
        + (f"{ms:.1f} | " if ms is not None else "- | ")
        + (f"{ips:.2f} | " if ips is not None else "- | ")
        + f"{mem} | ok |"
    )


def preflight():
    """device_info() from a subprocess: this process never loads TensorFlow.

    So the parent holds no GPU memory while the cases run, and TensorFlow's
    start-up lines (some hosts print oneDNN's whatever TF_CPP_MIN_LOG_LEVEL
    says) stay out of the console: without a GPU the output is one line.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "device.json")
        try:
            result = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--one=preflight",
                 f"--one_json={out}"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            _fail("TensorFlow did not start within 120 s (preflight)")
        if not os.path.exists(out):
            tail = result.stderr.strip().splitlines()[-1:] or [
                f"exit {result.returncode}"
            ]
            _fail(f"TensorFlow failed to start: {tail[0][:300]}")
        with open(out) as f:
            return json.load(f)


def _fail(message):
    print(f"device_check: {message}" if not message.startswith("device_check:")
          else message, file=sys.stderr)  # fmt: skip
    sys.exit(2)


def run(reduced, allow_cpu, budget_s, only, output_json):
    device = preflight()
    if not device["gpus"] and not (allow_cpu or reduced):
        _fail(_no_gpu_line(device))
    _print_device(device)
    figures = {
        "mode": "reduced" if reduced else "full", "device": device,
        "budget_s": budget_s, "cases": {},
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }  # fmt: skip
    print("| case | compile (s) | ms per step | images/s | peak device MB | status |")
    print("| --- | --- | --- | --- | --- | --- |")
    deadline = time.monotonic() + budget_s
    for name, full, small in CASES:
        if only and name not in only:
            continue
        budget = small if reduced else full
        if FLAGS.case_budget_s is not None and budget:
            budget = FLAGS.case_budget_s
        left = deadline - time.monotonic()
        if budget == 0 and name in TRAIN_CASES and TRAIN_CASES[name][1]:
            result = {
                "status": "skipped: reduced mode (XLA compilation takes minutes on CPU)"
            }
        elif name.startswith("train_fp16") and not device["gpus"]:
            result = {"status": "skipped: fp16 mixed precision needs a GPU"}
        elif left < budget:
            result = {
                "status": f"skipped: {max(left, 0):.0f} s left of --budget_s="
                f"{budget_s:.0f}, the case's budget is {budget:.0f} s"
            }  # fmt: skip
        else:
            result = _run_child(name, reduced, budget)
        result["budget_s"] = budget
        figures["cases"][name] = result
        print(_row(name, result), flush=True)
        if output_json:
            artefacts.write_json(figures, output_json, sort_keys=False)
    return figures


def main(argv):
    del argv
    if FLAGS.one:
        run_one = device_info if FLAGS.one == "preflight" else None
        figures = run_one() if run_one else run_case(FLAGS.one, FLAGS.reduced)
        artefacts.write_json(figures, FLAGS.one_json)
        return
    only = set(FLAGS.cases or ())
    unknown = only - set(BUDGETS)
    if unknown:
        _fail(f"--cases: unknown {sorted(unknown)}; known: {', '.join(BUDGETS)}")
    run(FLAGS.reduced, FLAGS.allow_cpu, FLAGS.budget_s, only, FLAGS.output_json)


if __name__ == "__main__":
    app.run(main)
