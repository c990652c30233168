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

from absl import app, flags

from deeplab_dpc import console, devices, errors

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


def define_model_variant_flag():
    """`--model_variant`, one of the registered backbones (`backbones.MODEL_VARIANTS`)."""
    from deeplab_dpc.backbones import MODEL_VARIANTS

    flags.DEFINE_enum(
        "model_variant", "mobilenet_v2", list(MODEL_VARIANTS), "Backbone."
    )


def define_nas_flags():
    """The NAS variants' flags (`--model_variant=nas_hnasnet`)."""
    flags.DEFINE_integer(
        "nas_stem_output_num_conv_filters", 20, "F of nas_hnasnet (S/M/L: 20/32/48)."
    )
    flags.DEFINE_string(
        "nas_architecture", None, "nas_spec JSON of nas_hnasnet; empty: the paper's."
    )


def define_model_flags():
    """Model and dataset flags (DeepLab's common.py), shared by all entry points."""
    define_model_variant_flag()
    flags.DEFINE_float("depth_multiplier", 1.0, "MobileNetV2 width multiplier.")
    define_nas_flags()
    flags.DEFINE_integer("output_stride", 16, "Backbone output stride: 8, 16 or 32.")
    flags.DEFINE_multi_string(
        "atrous_rates", [], "ASPP rates at output stride 16; empty: the head default."
    )
    flags.DEFINE_integer(
        "decoder_output_stride", None, "Decoder stride (4) or empty: no decoder."
    )
    flags.DEFINE_boolean(
        "aspp_with_separable_conv", True, "ASPP 3x3 convs separable (else full)."
    )
    flags.DEFINE_boolean(
        "decoder_use_separable_conv", True, "Decoder 3x3 convs separable (else full)."
    )
    flags.DEFINE_string("dpc_spec", None, "DPC spec JSON; empty: ASPP head.")
    flags.DEFINE_alias("dense_prediction_cell_json", "dpc_spec")
    flags.DEFINE_float(
        "batch_norm_decay", None, "Batch-norm decay; empty: DeepLab's (0.9997)."
    )
    flags.DEFINE_boolean(
        "upsample_logits", True, "Upsample logits to the label size (else labels down)."
    )
    flags.DEFINE_string("dataset", "synthetic", "Dataset name (registry).")
    flags.DEFINE_string("dataset_dir", None, "Directory of the TFRecord shards.")
    flags.DEFINE_enum(
        "dataset_source", "tfrecord", ["tfrecord", "tfds"], "Where samples come from."
    )
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory.")
    flags.DEFINE_string(
        "tfds_manual_dir", None, "TFDS manual download directory (e.g. Cityscapes)."
    )
    flags.DEFINE_string(
        "dataset_info_json", None, "JSON (file or text) with custom dataset facts."
    )


_DEFINERS = {
    "string": flags.DEFINE_string,
    "integer": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "boolean": flags.DEFINE_boolean,
    "multi_int": flags.DEFINE_multi_string,  # "h,w" or repeated, parsed by option_values
    "multi_float": flags.DEFINE_multi_string,
}


def define_option_flags(table):
    """One flag per row (name, kind, default, help) of an options table.

    Rows of kind "model" are flags of `define_model_flags`; ("enum", choices)
    is an enum flag; multi kinds take "a,b" or the repeated form.
    """
    for name, kind, default, help_text in table:
        if kind == "model":
            continue
        if isinstance(kind, tuple):
            flags.DEFINE_enum(name, default, list(kind[1]), help_text)
        elif kind.startswith("multi_"):
            flags.DEFINE_multi_string(name, [str(v) for v in default or ()], help_text)
        else:
            _DEFINERS[kind](name, default, help_text)


def option_values(table):
    """{name: value} of the flags of an options table, synthetic defaults applied.

    Multi kinds are parsed ("a,b" or repeated; an empty multi_float is None).
    """
    values = {}
    for name, kind, _, _ in table:
        raw = value(name)
        if kind == "multi_int":
            raw = multi_values(raw, int, name)
        elif kind == "multi_float":
            raw = multi_values(raw, float, name) or None
        values[name] = raw
    return values


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


def check_output_stride(value, name="output_stride"):
    """ValueError naming `--name` unless `value` is None or a supported output stride."""
    from deeplab_dpc import common

    if value is not None and value not in common.OUTPUT_STRIDES:
        strides = ", ".join(map(str, common.OUTPUT_STRIDES[:-1]))
        raise ValueError(
            f"--{name}: must be {strides} or {common.OUTPUT_STRIDES[-1]}, got {value}"
        )
    return value


def check_scales(name):
    """The positive, finite scales of multi-value flag `name` ("0.5,1" or repeated)."""
    scales = multi_values(FLAGS[name].value, float, name)
    for scale in scales:
        check_number(name, scale, 0.0, low_open=True)
    return scales


def is_set(name):
    """Whether the user gave flag `name` on the command line."""
    return FLAGS[name].present > 0


def value(name):
    """The flag value, or the synthetic-dataset default when the user did not set it."""
    if FLAGS.dataset == "synthetic" and name in SYNTHETIC_DEFAULTS and not is_set(name):
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


# Model flags whose value is the `model.model_config` argument of the same
# name; a tool passes those it defines. A new model option (a backbone's own
# flag) is one entry here and one flag definition.
MODEL_CONFIG_FLAGS = (
    "output_stride", "decoder_output_stride", "depth_multiplier",
    "batch_norm_decay", "upsample_logits", "dataset",
    "nas_stem_output_num_conv_filters", "nas_architecture",
    "aspp_with_separable_conv", "decoder_use_separable_conv",
)  # fmt: skip


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
        from deeplab_dpc import spec as spec_lib

        try:  # a bad spec fails here, before TensorFlow loads
            spec_lib.load_spec(spec)
        except ValueError as e:
            raise ValueError(f"--dpc_spec: {errors.one_line(e)}") from None
    kwargs = {n: get(n) for n in MODEL_CONFIG_FLAGS if get(n) is not None}
    from deeplab_dpc import model  # TensorFlow loads here

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
        fail(f"unexpected arguments: {' '.join(argv[1 + positional:])}", prog)
    return argv


def _guarded(main, argv, prog):
    from deeplab_dpc import interrupts

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
    """(info, dataset_dir, dataset_source) for eval/vis of a checkpoint.

    Flags the user set win; the rest come from the checkpoint's
    train_config.json, so `python eval.py` evaluates on the training dataset.
    """
    from deeplab_dpc import artefacts
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
    return info, dataset_dir, source


def require_checkpoint(path, flag="checkpoint_dir"):
    """FileNotFoundError unless `path` is a checkpoint directory or ckpt-N prefix."""
    from deeplab_dpc import artefacts

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
