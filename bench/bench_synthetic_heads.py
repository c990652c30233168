r"""Do hand-designed heads land where the synthetic dataset's design says?

    python search.py --stages=cache                  # the main job's cache (or reuse it)
    python bench/bench_synthetic_heads.py            # its default: workdir/search/cache
    python bench/bench_synthetic_heads.py --random_cells=12 --json=heads.json

Trains, on the main job's feature cache (the search's proxy task: the cell
alone on frozen backbone features, `search.proxy.train_proxy`, the
main job's steps and learning rate), each of

* `1x1`: one 1x1 conv, no context beyond the backbone's (the bad head);
* `aspp`: DeepLabv3's ASPP as a DPC (1x1, separable rates 6/12/18, image
  pooling: `spec.ASPP_BRANCHES`);
* `top1`: the paper's Cityscapes cell (`spec.TOP1`);
* `--random_cells` cells sampled uniformly from the full space (seeds 0..N-1),

and prints each one's mIoU and per-class IoU. On `synthetic` the design
(`deeplab_dpc/data/synthetic.py`) predicts: `1x1` cannot tell `red_line`
from `blue_line` (their only cue is a band 3-8 cells away) and scores
lowest; `aspp` and `top1` reach it and score well above; the blob classes
(size) and background are learnt by every head. g3doc/datasets.md gives the
figures. Not a test: one process, one candidate after another.
"""

from deeplab_dpc.core import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads (--verbosity=1 brings its logging back)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from deeplab_dpc.core import artefacts  # noqa: E402
from deeplab_dpc.data import registry  # noqa: E402
from deeplab_dpc.formats import dpc_spec as spec_lib  # noqa: E402
from deeplab_dpc.reporting.metrics import iou_per_class, mean_iou  # noqa: E402
from deeplab_dpc.search import cache as cache_lib  # noqa: E402
from deeplab_dpc.search import proxy  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("cache_dir", "workdir/search/cache", "Feature cache (search.py's).")
flags.DEFINE_integer("proxy_steps", 150, "Proxy training steps (search.py's default).")
flags.DEFINE_float("proxy_learning_rate", 0.05, "search.py's default.")
flags.DEFINE_integer("proxy_batch_size", 8, "search.py's default.")
flags.DEFINE_integer("random_cells", 0, "Cells sampled uniformly from the full space.")
flags.DEFINE_integer("seed", 0, "Training seed of every head.")
flags.DEFINE_string("json", None, "Also write the results here.")

ONE_BY_ONE = [
    {
        spec_lib.OP: spec_lib.CONV, spec_lib.KERNEL: [1, 1], spec_lib.RATE: [1, 1],
        spec_lib.INPUT: spec_lib.BACKBONE_INPUT,
    }
]  # fmt: skip


def heads(random_cells):
    named = [
        ("1x1", ONE_BY_ONE),
        ("aspp", spec_lib.ASPP_BRANCHES),
        ("top1", spec_lib.TOP1),
    ]
    for index in range(random_cells):
        spec = spec_lib.sample_spec(np.random.default_rng(index), 5)
        named.append((f"random{index}", spec))
    return named


def main(argv):
    del argv
    cache = cache_lib.open_cache(FLAGS.cache_dir)
    info = registry.DATASETS.get(cache.info["dataset"])
    names = info.class_names if info else [str(c) for c in range(cache.num_classes)]
    rows = []
    print(f"{'head':<9} {'mIoU':>6}  " + " ".join(f"{n:>10}" for n in names))
    for name, spec in heads(FLAGS.random_cells):
        result = proxy.train_proxy(
            spec, cache, steps=FLAGS.proxy_steps, batch_size=FLAGS.proxy_batch_size,
            learning_rate=FLAGS.proxy_learning_rate, seed=FLAGS.seed,
        )  # fmt: skip
        ious = iou_per_class(result["confusion"])
        miou = mean_iou(result["confusion"])
        rows.append({
            "head": name, "key": spec_lib.canonical_key(spec), "miou": float(miou),
            "per_class_iou": dict(zip(names, (float(v) for v in ious))),
        })  # fmt: skip
        print(
            f"{name:<9} {miou:6.3f}  " + " ".join(f"{v:10.3f}" for v in ious)
            + f"   {spec_lib.canonical_key(spec)}", flush=True,
        )  # fmt: skip
    if FLAGS.json:
        artefacts.write_json(
            {"cache_dir": FLAGS.cache_dir, "proxy_steps": FLAGS.proxy_steps,
             "proxy_learning_rate": FLAGS.proxy_learning_rate, "seed": FLAGS.seed,
             "heads": rows},
            FLAGS.json,
        )  # fmt: skip


if __name__ == "__main__":
    app.run(main)
