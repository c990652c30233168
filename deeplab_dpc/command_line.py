"""Flags shared by the entry points (train.py, eval.py, vis.py), and their glue.

Only entry points import this module; the library takes explicit arguments.
Flag names and defaults are the original DeepLab's (`common.py`, `train.py`,
`eval.py`, `vis.py`), so old command lines keep working. Multi-value flags
accept both `--eval_scales=0.5,1,1.5` and the repeated DeepLab form
`--eval_scales=0.5 --eval_scales=1`.

Deviations from DeepLab:
- `--dataset` defaults to `synthetic` (generated on first use, no download),
  and for it the flags the user did not set take the small CPU values of
  `SYNTHETIC_DEFAULTS` (see g3doc/training.md); real datasets keep DeepLab's.
- `--dpc_spec` (alias `--dense_prediction_cell_json`): no spec means ASPP.
- New: `--batch_norm_decay` (DeepLab hard-codes 0.9997), `--dataset_info_json`.
- A bad flag value or user error prints one line and exits with code 2.
- New: `--gpu_memory_growth` (on by default; `deeplab_dpc/devices.py`), so
  that eval or vis beside train, or several search workers, share a GPU.
"""

import sys

from absl import app, flags

from deeplab_dpc.core import common, console, devices, errors, option_table
from deeplab_dpc.core.option_table import Option

FLAGS = flags.FLAGS
devices.define_flag(FLAGS)  # --gpu_memory_growth, on by default (devices.py)

# Flags that take other values when --dataset=synthetic and the user did not
# set them: a model and schedule that learn the synthetic scenes on a 2-core
# CPU in a few minutes. BN decay 0.99: DeepLab's 0.9997 cannot settle in a few
# hundred steps.
SYNTHETIC_DEFAULTS = {
    "depth_multiplier": 0.5,
    "batch_norm_decay": 0.99,
    "train_crop_size": ["129", "129"],
    "train_batch_size": 8,
    "training_number_of_steps": 1000,
    "base_learning_rate": 0.05,
    "save_interval_secs": 60.0,
    "save_summaries_secs": 30.0,
}


def _model_variants():
    from deeplab_dpc.backbones import MODEL_VARIANTS

    return MODEL_VARIANTS


# The shared groups, declared once. Model flags (DeepLab's common.py): their
# values are the `model.model_config` arguments of the same name (`field`).
MODEL_OPTIONS = (
    Option("model_variant", "enum", "mobilenet_v2", "Backbone.", choices=_model_variants),
    Option("depth_multiplier", "float", 1.0, "MobileNetV2 width multiplier.",
           low=0.0, high=4.0, low_open=True),
    Option("nas_stem_output_num_conv_filters", "integer", 20,
           "F of nas_hnasnet (S/M/L: 20/32/48).", low=1),
    Option("nas_architecture", "string", None,
           "nas_spec JSON of nas_hnasnet; empty: the paper's."),
    Option("nas_stem_filters", "ints", (),
           "nas_hnasnet stem conv filters, 3 values; empty: the paper's 64,64,128.",
           low=1),
    Option("output_stride", "integer", 16, "Backbone output stride: 8, 16 or 32.",
           choices=common.OUTPUT_STRIDES),
    Option("atrous_rates", "ints", (),
           "ASPP rates at output stride 16; empty: the head default.", low=1),
    Option("decoder_output_stride", "integer", None,
           "Decoder stride (4) or empty: no decoder.", choices=(4,)),
    Option("aspp_with_separable_conv", "boolean", True,
           "ASPP 3x3 convs separable (else full)."),
    Option("decoder_use_separable_conv", "boolean", True,
           "Decoder 3x3 convs separable (else full)."),
    Option("dpc_spec", "string", None, "DPC spec JSON; empty: ASPP head.",
           alias="dense_prediction_cell_json"),
    Option("batch_norm_decay", "float", None,
           "Batch-norm decay; empty: DeepLab's (0.9997).", low=0.0, high=1.0),
    Option("upsample_logits", "boolean", True,
           "Upsample logits to the label size (else labels down)."),
)  # fmt: skip
# The head of the tools that build a model from flags (model_stats, import_weights).
HEAD_OPTION = Option("head", "enum", None, "Head; default: dpc with --dpc_spec, else aspp.",
                     choices=("dpc", "aspp"))  # fmt: skip
# Dataset flags: where samples come from (`data.pipeline.DataSource`).
DATASET_OPTIONS = (
    Option("dataset", "string", "synthetic", "Dataset name (registry)."),
    Option("dataset_dir", "string", None, "Directory of the TFRecord shards."),
    Option("dataset_source", "enum", "tfrecord", "Where samples come from.",
           choices=("tfrecord", "tfds")),
    Option("tfds_data_dir", "string", None, "TFDS data directory."),
    Option("tfds_manual_dir", "string", None,
           "TFDS manual download directory (e.g. Cityscapes)."),
    Option("dataset_info_json", "string", None,
           "JSON (file or text) with custom dataset facts."),
)  # fmt: skip
# Checkpoint-watching flags of eval.py and vis.py.
WATCH_OPTIONS = (
    Option("checkpoint_dir", "string", "runs/train", "Checkpoint dir or ckpt-N prefix."),
    Option("eval_scales", "floats", (1.0,), "Inference scales.", low=0.0, low_open=True),
    Option("add_flipped_images", "boolean", False, "Also average left-right flips."),
    Option("eval_interval_secs", "integer", 300, "Seconds between checkpoint polls.",
           low=0),
    Option("max_wait_secs", "float", None,
           "Stop after this long without a newer checkpoint (default: 2 x the "
           "training's save_interval_secs + 60).", low=0.0),
)  # fmt: skip


def define_model_variant_flag():
    """`--model_variant`, one of the registered backbones (`backbones.MODEL_VARIANTS`)."""
    define_options(MODEL_OPTIONS[:1])


def define_model_flags():
    """Model and dataset flags (DeepLab's common.py), shared by all entry points."""
    define_options(MODEL_OPTIONS + DATASET_OPTIONS)


def define_watch_flags(table):
    """The flags of eval.py or vis.py: the model and dataset groups, and the
    checkpoint-watching group with the script's own `table` (the script's
    flags, as `watch_values` reads them)."""
    define_model_flags()
    define_options(WATCH_OPTIONS + table, module_name=_caller_module())


_DEFINERS = {
    "string": flags.DEFINE_string,
    "integer": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "boolean": flags.DEFINE_boolean,
    "list": flags.DEFINE_list,
    "multi_float": flags.DEFINE_multi_float,
    "ints": flags.DEFINE_multi_string,  # "h,w" or repeated, parsed by option_values
    "floats": flags.DEFINE_multi_string,
}


def _caller_module():
    """The module name absl gives flags defined by our caller (as its DEFINEs do)."""
    name = sys._getframe(2).f_globals.get("__name__", "")
    return sys.argv[0] if name == "__main__" and sys.argv else name


def define_options(table, flag_values=None, module_name=None):
    """One absl flag per row of an options table (`option_table.Option`).

    Rows marked `shared` are flags of a shared group, defined by it; a flag
    already defined (a shared group used twice) is left as it is. "ints" and
    "floats" take "a,b" or the repeated form. The flags belong to the calling
    module, or to `module_name` (absl's --helpshort lists an entry point's own
    flags).
    """
    flag_values = FLAGS if flag_values is None else flag_values
    module = {"module_name": module_name or _caller_module()}
    for option in table:
        if option.shared or not option.cli or option.name in flag_values:
            continue
        default = option.default
        if option.kind == "enum":
            flags.DEFINE_enum(option.name, default, [str(c) for c in option.known()],
                              option.help, flag_values=flag_values, **module)  # fmt: skip
            continue
        if option.kind in ("ints", "floats"):  # DeepLab's: [] when unset
            default = [str(v) for v in default or ()]
        elif option.kind == "list":
            default = None if default is None else [str(v) for v in default]
        _DEFINERS[option.kind](
            option.name, default, option.help, flag_values=flag_values, **module
        )
        if option.alias:
            flags.DEFINE_alias(option.alias, option.name, flag_values=flag_values)


def option_values(table, check=True):
    """{name: value} of the flags of an options table, checked against its rows.

    Synthetic defaults applied; "ints" / "floats" parsed ("a,b" or repeated;
    an empty one is its default when that is None). A value out of its row's
    range or choices: ValueError naming the flag.
    """
    values = {}
    for option in table:
        if not option.cli:
            continue
        raw = value(option.name)
        if option.kind in ("ints", "floats"):
            cast = int if option.kind == "ints" else float
            raw = multi_values(raw, cast, option.name)
            if not raw and option.default is None:
                raw = None
        values[option.name] = raw
    if check:
        option_table.check_values(table, values)
    return values


def config_values(table, values):
    """{field: value}: the values of `option_values` keyed by the fields they feed."""
    return {
        option.target: values[option.name] for option in table if option.name in values
    }


def multi_values(values, cast, name):
    """Flattens ['0.5,1', '1.5'] to [0.5, 1.0, 1.5]; ValueError names the flag."""
    out = []
    for value in values or []:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(cast(part))
            except ValueError:
                raise ValueError(
                    f"--{name}: {part!r} is not a valid {cast.__name__}"
                ) from None
    return out


def check_number(name, value, low=0.0, high=None, low_open=False):
    """ValueError naming `--name` unless `value` is None or a finite number in range."""
    return errors.check_range(f"--{name}", value, low, high, low_open)


def is_set(name):
    """Whether the user gave flag `name` on the command line."""
    return FLAGS[name].present > 0


def value(name):
    """The flag value, or the synthetic-dataset default when the user did not set it."""
    synthetic = "dataset" in FLAGS and FLAGS.dataset == "synthetic"
    if synthetic and name in SYNTHETIC_DEFAULTS and not is_set(name):
        return SYNTHETIC_DEFAULTS[name]
    return FLAGS[name].value


def dataset_info():
    """The `DatasetInfo` of --dataset (and --dataset_info_json)."""
    from deeplab_dpc.data import registry

    try:
        return registry.get_dataset_info(FLAGS.dataset, FLAGS.dataset_info_json)
    except (ValueError, OSError) as e:
        name = "dataset_info_json" if FLAGS.dataset_info_json else "dataset"
        message = errors.one_line(e)
        if f"--{name}" not in message:
            message = f"--{name}: {message}"
        raise ValueError(message) from None


# Model flags whose value is the `model.model_config` argument their row names
# (`field`), passed as they are; a tool passes those it defines. The variant,
# head, spec and rates are translated by `model_config_from_flags`. A new
# model option (a backbone's own flag) is one row of MODEL_OPTIONS and one
# `model_config` argument.
MODEL_CONFIG_FLAGS = tuple(
    option.target for option in MODEL_OPTIONS
    if option.name not in ("model_variant", "atrous_rates", "dpc_spec")
) + ("dataset",)  # fmt: skip


def atrous_rates_from_flag(flag_values):
    """`--atrous_rates`: None when not given (the head default 6, 12, 18), else a
    list of ints, empty for `--atrous_rates=` (ASPP-lite); repeated or comma form."""
    if not flag_values["atrous_rates"].present:
        return None
    return multi_values(flag_values.atrous_rates, int, "atrous_rates")


def model_config_from_flags(flag_values, num_classes, **overrides):
    """`model.model_config` from the model flags of `flag_values`: the one translation.

    Used by train.py, search.py, `tools.model_stats` and `tools.import_weights`.
    The head is `--head` where a tool defines it, else DPC when `--dpc_spec` is
    given and ASPP otherwise. `overrides` replace flag values (the synthetic
    defaults). Flags a tool does not define take `model_config`'s defaults.
    """

    def get(name):
        if name in overrides:
            return overrides[name]
        return flag_values[name].value if name in flag_values else None

    spec = get("dpc_spec") or None
    rates = atrous_rates_from_flag(flag_values)
    head = get("head")
    if head is None:
        if spec is not None and rates:
            raise ValueError(
                "--atrous_rates set the ASPP head; drop them or --dpc_spec"
            )
        head = "dpc" if spec else "aspp"
    if head == "dpc" and isinstance(spec, str):
        from deeplab_dpc.formats import dpc_spec as spec_lib

        try:  # a bad spec fails here, before TensorFlow loads
            spec_lib.load_spec(spec)
        except ValueError as e:
            raise ValueError(f"--dpc_spec: {errors.one_line(e)}") from None
    kwargs = {n: get(n) for n in MODEL_CONFIG_FLAGS if get(n) is not None}
    # DeepLab's multi-value flags ("a,b" or repeated) arrive as absl's raw
    # strings unless `option_values` parsed them already (or an override).
    casts = {"ints": int, "floats": float}
    for option in MODEL_OPTIONS:
        if (
            option.target in kwargs
            and option.kind in casts
            and option.name not in overrides
        ):
            kwargs[option.target] = multi_values(
                kwargs[option.target], casts[option.kind], option.name
            )
    from deeplab_dpc.modeling import model  # TensorFlow loads here

    return model.model_config(
        get("model_variant"), num_classes, head=head, dpc_spec=spec,
        atrous_rates=rates, **kwargs,
    )  # fmt: skip


def model_config(num_classes):
    """The model config of the entry points' flags (synthetic defaults applied)."""
    synthetic = {n: value(n) for n in ("depth_multiplier", "batch_norm_decay")}
    return model_config_from_flags(FLAGS, num_classes, **synthetic)


fail = errors.fail  # one line on stderr, exit code 2


def parse_flags(argv, prog=None):
    """absl's parse of `argv`, but a bad flag is one line and exit code 2.

    absl's own parse errors exit 1 with the usage text; here the line names
    the flag (`flag --train_batch_size=abc: invalid literal ...`).
    """
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(e, prog)


def _parsed(argv, prog, positional=0):
    argv = parse_flags(argv, prog)
    if len(argv) > 1 + positional:  # `positional`: how many the command takes
        fail(f"unexpected arguments: {' '.join(argv[1 + positional :])}", prog)
    return argv


def _guarded(main, argv, prog):
    from deeplab_dpc.core import interrupts

    devices.apply_flag(FLAGS)  # before main's first TensorFlow op

    try:
        return interrupts.guard(lambda: main(argv), prog)
    except (ValueError, FileNotFoundError) as e:
        fail(e, prog)


def run_main(main, argv, prog=None, positional=0):
    """Parses `argv` and runs `main` as `run` does, without absl's process setup.

    Tests call it in-process with hundreds of command lines.
    """
    return _guarded(main, _parsed(argv, prog, positional), prog)


def run(main, prog=None, positional=0):
    """`app.run(main)`, with flag errors and user errors as one line, exit code 2.

    A bad flag value, more positional arguments than `positional` (the entry
    points take none; `tools.experiment` takes its action and plan), a `ValueError` or
    `FileNotFoundError` from `main`: `<prog>: error: <one line>`, exit code 2.
    TensorFlow's console logging is quieted first (`console.quiet_tensorflow`);
    SIGINT and SIGTERM stop the command with one line (`interrupts.guard`).
    """
    console.quiet_tensorflow()  # before main() loads TensorFlow
    app.run(
        lambda argv: _guarded(main, argv, prog),
        flags_parser=lambda argv: _parsed(argv, prog, positional),
    )


def dataset_for_checkpoint(checkpoint_path):
    """(info, `registry.DataSource`) for eval/vis of a checkpoint.

    Flags the user set win; the rest come from the checkpoint's
    train_config.json, so `python eval.py` evaluates on the training dataset.
    """
    from deeplab_dpc.core import artefacts
    from deeplab_dpc.data import registry

    trained = artefacts.read_train_config(checkpoint_path) or {}
    name = FLAGS.dataset if is_set("dataset") else trained.get("dataset", FLAGS.dataset)
    info = registry.get_dataset_info(name, FLAGS.dataset_info_json)
    same = name == trained.get("dataset")
    dataset_dir = FLAGS.dataset_dir
    if dataset_dir is None and same:
        dataset_dir = trained.get("dataset_dir")
    source = FLAGS.dataset_source
    if not is_set("dataset_source") and same:
        source = trained.get("dataset_source", source)
    return info, registry.DataSource(
        dataset_dir, source, FLAGS.tfds_data_dir, FLAGS.tfds_manual_dir
    )


def watch_values(table, split_flag, honoured=("output_stride",)):
    """The checked flags of eval.py or vis.py (the shared groups and `table`).

    Returns {"info", "data" (a `registry.DataSource`), "eval_scales",
    "watching"}; "watching" holds the keyword arguments of the watching loop
    that `evaluate` and `visualize_checkpoints` share (flips, poll interval,
    wait). The checkpoint must exist and --<split_flag> name a split of its
    dataset.
    """
    from deeplab_dpc.data import registry

    values = option_values(MODEL_OPTIONS + DATASET_OPTIONS + WATCH_OPTIONS + table)
    require_checkpoint(FLAGS.checkpoint_dir)
    note_ignored_model_flags(honoured)
    info, data = dataset_for_checkpoint(FLAGS.checkpoint_dir)
    try:
        registry.resolve_split(info, FLAGS[split_flag].value)
    except ValueError as e:
        raise ValueError(f"--{split_flag}: {e}") from None
    watching = {
        "add_flipped_images": values["add_flipped_images"],
        "eval_interval_secs": values["eval_interval_secs"],
        "wait_secs": values["max_wait_secs"],
    }
    return {
        "info": info,
        "data": data,
        "eval_scales": values["eval_scales"],
        "watching": watching,
    }


def require_checkpoint(path, flag="checkpoint_dir"):
    """FileNotFoundError unless `path` is a checkpoint directory or ckpt-N prefix."""
    from deeplab_dpc.core import artefacts

    if not (artefacts.isdir(path) or artefacts.exists(path + ".index")):
        raise FileNotFoundError(
            f"--{flag}={path}: no such checkpoint (expected a directory or "
            "a ckpt-N prefix)"
        )


def note_ignored_model_flags(honoured=()):
    """Model flags given to eval/vis are ignored: the checkpoint has its config.

    `honoured`: the flags the caller applies on top of the checkpoint's config
    (eval.py's --output_stride).
    """
    names = ("model_variant", "output_stride", "atrous_rates", "dpc_spec",
             "decoder_output_stride", "depth_multiplier")  # fmt: skip
    given = [n for n in names if is_set(n) and n not in honoured]
    if given:
        from absl import logging

        logging.info(
            "Ignoring %s: the model is rebuilt from the checkpoint's model_config.json",
            ", ".join("--" + n for n in given),
        )
