"""Imports official DeepLab weights into our Keras model and writes a checkpoint of ours.

    python -m deeplab_dpc.tools.import_weights \\
      --source=../shared/models/deeplabv3_257_mv_gpu.tflite \\
      --model_variant=mobilenet_v2 --depth_multiplier=0.5 --output_stride=8 \\
      --head=aspp --atrous_rates= --num_classes=21 --output=checkpoints/mnv2_voc

The output is a checkpoint like every other of ours (weights + the model
config, written atomically by `checkpoints.write_model_checkpoint`), so
train / eval / vis / export / search take it with no model flags, as
`--tf_initial_checkpoint` or as a trained model. `import_report.json` beside
it records the source and what was loaded, initialised fresh and left unused.

Mapping: each unit of the model (`naming.iter_units`) is looked up under its
original DeepLab scope (`naming.deeplab_scope`) among the source's units
(`weight_sources`). Rules, in the spirit of DeepLab's `--tf_initial_checkpoint`:

- The backbone must be complete in the source: a missing backbone layer means
  another architecture (error), a kernel of another shape means another
  variant or depth multiplier (error).
- Head and decoder layers that the source lacks are initialised fresh (e.g. a
  DPC head on a backbone-only ImageNet checkpoint); present but of another
  shape is an error (the head flags do not describe the source).
- `logits/semantic` with another class count is initialised fresh and said so.
- `backbone_only` loads the backbone alone; `initialize_last_layer=False`
  everything but `logits` (DeepLab's flag of that name).

Folded batch norm (TFLite): the folded kernel goes into the conv and the
folded bias into the following batch norm as gamma 1, beta = bias, moving
mean 0, moving variance 1 - epsilon (the layer's own epsilon), so inference
computes conv(x) + bias exactly and the model keeps its batch-norm layers for
fine-tuning. Deviation from the original checkpoint: the true batch
statistics are gone; fine-tuning with batch norm in training mode
re-estimates them, and with a small batch keep batch norm frozen.
"""

import collections
import hashlib
import os

import numpy as np

from deeplab_dpc.core import artefacts, common, errors
from deeplab_dpc.modeling import naming
from deeplab_dpc.tools import weight_sources
from deeplab_dpc.tools.weight_sources import BATCH_NORM_LEAVES, WeightSourceError

REPORT_FILENAME = artefacts.IMPORT_REPORT

_HINTS = {
    common.BACKBONE: "is --model_variant / --depth_multiplier that of the source?",
    common.HEAD: "do --head / --atrous_rates / --dpc_spec describe the source's head?",
    common.DECODER: "does --decoder_output_stride describe the source?",
    common.LOGITS: "",
}


class WeightImportError(ValueError):
    """Weights that do not fit the model; the message names the tensor and why."""


class _Mismatch(Exception):
    def __init__(self, tensor, message):
        super().__init__(f"{tensor}: {message}")


def _unit_variables(unit):
    return [
        v for layer in (unit.conv, unit.bn) if layer is not None for v in layer.weights
    ]


def _check_shape(src, role, array, expected, path):
    if tuple(array.shape) != tuple(expected):
        stored = list(src.source_shapes.get(role, array.shape))
        as_keras = (
            "" if stored == list(array.shape) else f" ({list(array.shape)} as Keras)"
        )
        raise _Mismatch(
            src.names.get(role, f"{src.scope}/{role}"),
            f"stored {stored}{as_keras}, but {path} needs {list(expected)}",
        )


def _folded_batch_norm(bias, channels, epsilon):
    beta = np.zeros([channels], np.float32) if bias is None else bias
    return {
        "gamma": np.ones([channels], np.float32),
        "beta": beta,
        "moving_mean": np.zeros([channels], np.float32),
        "moving_variance": np.full([channels], 1.0 - epsilon, np.float32),
    }


def unit_arrays(unit, src):
    """[(variable, array)] for one target unit from one source unit, shapes checked."""
    kernel = src.arrays["kernel"]
    _check_shape(src, "kernel", kernel, unit.conv.kernel.shape, unit.path)
    out = [(unit.conv.kernel, kernel)]
    has_bn = "moving_mean" in src.arrays
    bias = src.arrays.get("bias")
    if unit.bn is None:
        if has_bn:
            raise _Mismatch(
                src.names["moving_mean"],
                f"batch norm in the source where {unit.path} has a plain bias",
            )
        channels = unit.conv.bias.shape[0]
        bias = np.zeros([channels], np.float32) if bias is None else bias
        _check_shape(src, "bias", bias, unit.conv.bias.shape, unit.path)
        out.append((unit.conv.bias, bias))
        return out
    channels = unit.bn.moving_mean.shape[0]
    if bias is not None:
        _check_shape(src, "bias", bias, (channels,), unit.path)
    if has_bn:
        bn = {leaf: src.arrays.get(leaf) for leaf in BATCH_NORM_LEAVES}
        if bn["gamma"] is None:  # slim batch_norm(scale=False)
            bn["gamma"] = np.ones([channels], np.float32)
        _check_shape(src, "moving_mean", bn["moving_mean"], (channels,), unit.path)
        if bias is not None:  # BN(x + b) == BN with moving_mean - b
            bn["moving_mean"] = bn["moving_mean"] - bias
    else:
        bn = _folded_batch_norm(bias, channels, unit.bn.epsilon)
    for leaf in BATCH_NORM_LEAVES:
        variable = getattr(unit.bn, leaf)
        _check_shape(src, leaf, bn[leaf], variable.shape, unit.path)
        out.append((variable, bn[leaf]))
    return out


def _new_report(source):
    return {
        "source": artefacts.absolute(source.path),
        "kind": source.kind,
        "loaded": [],
        "fresh": [],
        "unused": [],
        "warnings": [],
    }


def _skip_reason(module, initialize_last_layer, backbone_only):
    if backbone_only and module != common.BACKBONE:
        return "not requested (--backbone_only)"
    if not initialize_last_layer and module == common.LOGITS:
        return "not requested (--initialize_last_layer=false)"
    return None


def _check_backbone_complete(scoped, source, config):
    backbone = [s for u, s in scoped if naming.top_level(u.path) == common.BACKBONE]
    missing = [scope for scope in backbone if scope not in source.units]
    if not missing:
        return
    total = len(backbone)
    examples = ", ".join(sorted(source.units)[:2]) or "none"
    raise WeightImportError(
        f"{missing[0]}/weights: not in {source.path} ({total - len(missing)} of "
        f"{total} {config['model_variant']} backbone layers found; the source's "
        f"layers look like: {examples}): a model of another architecture? "
        "check --model_variant"
    )


def _class_count_change(unit, src):
    """The fresh-logits reason when only the class count differs, else None."""
    have, want = src.arrays["kernel"].shape, tuple(unit.conv.kernel.shape)
    if have[:-1] == want[:-1] and have[-1] != want[-1]:
        return (
            f"the source has {have[-1]} classes, the model {want[-1]} (as with "
            "DeepLab's --initialize_last_layer=false)"
        )
    return None


def _stride_warning(unit, src, scope):
    if src.strides is None:
        return None
    ours = (tuple(unit.conv.strides), tuple(unit.conv.dilation_rate))
    theirs = (tuple(src.strides), tuple(src.dilation))
    if ours == theirs:
        return None
    return (
        f"{scope}: stride {list(theirs[0])} rate {list(theirs[1])} in the source, "
        f"stride {list(ours[0])} rate {list(ours[1])} here"
    )


def import_into_model(
    model, config, source, initialize_last_layer=True, backbone_only=False
):
    """Sets `model`'s weights from a `weight_sources.Source`; returns the report dict.

    Raises `WeightImportError` (and leaves the model untouched) when the
    source does not fit; see the module docstring for the rules.
    """
    scoped = [
        (
            u,
            naming.deeplab_scope(
                model, u.path, config["model_variant"], config["head"]
            ),
        )
        for u in naming.iter_units(model)
    ]
    _check_backbone_complete(scoped, source, config)
    report = _new_report(source)
    assignments, unused_reasons = [], {}
    for unit, scope in scoped:
        module = naming.top_level(unit.path)
        n = len(_unit_variables(unit))
        src = source.units.get(scope)
        reason = _skip_reason(module, initialize_last_layer, backbone_only)
        if reason is None and src is None:
            reason = f"not in the source (no {scope}/weights)"
        elif reason is None and module == common.LOGITS:
            reason = _class_count_change(unit, src)
        if reason is not None:
            report["fresh"].append(
                {"layer": unit.path, "variables": n, "reason": reason}
            )
            if src is not None:
                unused_reasons[scope] = reason
            continue
        try:
            assignments.extend(unit_arrays(unit, src))
        except _Mismatch as e:
            hint = _HINTS[module]
            raise WeightImportError(f"{e}; {hint}" if hint else str(e)) from None
        report["loaded"].append({"layer": unit.path, "scope": scope, "variables": n})
        warning = _stride_warning(unit, src, scope)
        if warning:
            report["warnings"].append(warning)
    for variable, array in assignments:
        variable.assign(array)
    _account_source(report, source, unused_reasons, config)
    _account_other_variables(report, model, scoped)
    return report


def _account_source(report, source, unused_reasons, config):
    loaded = {entry["scope"] for entry in report["loaded"]}
    used = 0
    for scope, src in sorted(source.units.items()):
        if scope in loaded:
            used += len(src.names)
            continue
        reason = unused_reasons.get(scope) or (
            f"no layer {scope} in this model ({config['model_variant']}, "
            f"head {config['head']})"
        )
        for role, name in src.names.items():
            shape = list(src.source_shapes[role])
            report["unused"].append({"tensor": name, "shape": shape, "reason": reason})
    for name, (shape, reason) in sorted(source.others.items()):
        report["unused"].append(
            {"tensor": name, "shape": list(shape), "reason": reason}
        )
    report["used_tensors"] = used


def _account_other_variables(report, model, scoped):
    in_units = {id(v) for unit, _ in scoped for v in _unit_variables(unit)}
    for variable in model.weights:
        if id(variable) not in in_units:
            report["fresh"].append(
                {
                    "layer": variable.path,
                    "variables": 1,
                    "reason": "not part of a conv unit",
                }
            )


def summary_line(report):
    """One line: how many source tensors were used and target weights loaded."""
    unused = len(report["unused"])
    used = report["used_tensors"]
    loaded = sum(e["variables"] for e in report["loaded"])
    fresh = sum(e["variables"] for e in report["fresh"])
    layers = len(report["loaded"]) + len(report["fresh"])
    return (
        f"summary: source tensors: {used} used, {unused} unused (of {used + unused}); "
        f"model weights: {loaded} loaded, {fresh} initialised fresh (of "
        f"{loaded + fresh}; {len(report['loaded'])} of {layers} layers loaded)"
    )


def _grouped(entries, key, reason_key="reason", limit=4):
    groups = collections.OrderedDict()
    for entry in entries:
        groups.setdefault(entry[reason_key], []).append(entry[key])
    for reason, names in groups.items():
        shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
        yield reason, names, shown


def format_report(report):
    """Human-readable lines: fresh layers, unused tensors, warnings, summary."""
    lines = [f"source: {report['source']} ({report['kind']})"]
    for reason, names, shown in _grouped(report["fresh"], "layer"):
        lines.append(f"initialised fresh: {len(names)} layer(s): {reason}: {shown}")
    for reason, names, shown in _grouped(report["unused"], "tensor"):
        lines.append(f"unused: {len(names)} source tensor(s): {reason}: {shown}")
    if report["warnings"]:
        lines.append(
            f"warning: {len(report['warnings'])} layer(s) run with other strides or "
            f"rates than in the source (first: {report['warnings'][0]}): "
            "--output_stride differs from the source's (fine for fine-tuning; "
            "predictions will not match the source's exactly)"
        )
    lines.append(summary_line(report))
    return lines


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_output(output):
    """Refuses to replace anything but an earlier checkpoint directory of ours."""
    if not output:
        raise WeightImportError("--output: required (a new checkpoint directory)")
    if not artefacts.exists(output):  # local or remote (gs://)
        return
    ours = artefacts.isdir(output) and (
        not artefacts.listdir(output)
        or artefacts.exists(os.path.join(output, artefacts.MODEL_CONFIG))
    )
    if not ours:
        raise WeightImportError(
            f"{output}: exists and is not a checkpoint directory of ours; "
            "choose another --output"
        )


def import_weights(
    source_path, config, output, initialize_last_layer=True, backbone_only=False
):
    """Reads official weights, builds the model of `config`, imports, writes `output`.

    Returns (report, checkpoint prefix). Nothing is written when the source
    does not fit (`WeightSourceError`, `WeightImportError`).
    """
    from deeplab_dpc.modeling.checkpoints import write_model_checkpoint
    from deeplab_dpc.modeling.model import build_model

    _check_output(output)
    source = weight_sources.read_source(source_path)
    model = build_model(config)
    report = import_into_model(
        model, config, source, initialize_last_layer, backbone_only
    )
    if source.kind == weight_sources.TFLITE:
        report["sha256"] = _file_sha256(source.path)
    report["options"] = {
        "initialize_last_layer": bool(initialize_last_layer),
        "backbone_only": bool(backbone_only),
    }
    prefix = write_model_checkpoint(model, config, output)
    artefacts.write_json(report, os.path.join(output, REPORT_FILENAME), indent=1)
    return report, prefix


# === Command line ===


def parse_atrous_rates(values):
    """`--atrous_rates` values -> None (absent: (6, 12, 18)) or a list; "" -> []."""
    from deeplab_dpc.command_line import multi_values

    if values is None:
        return None
    try:
        return multi_values(values, int, "atrous_rates")
    except ValueError as e:
        raise WeightImportError(
            f"--atrous_rates: expected integers such as 6,12,18 (or empty), got {values}"
        ) from e


def config_from_flags(f):
    """The model config that the flags describe (raises ModelConfigError)."""
    from deeplab_dpc.command_line import model_config_from_flags

    parse_atrous_rates(f.atrous_rates)  # this tool's message for a bad rate
    return model_config_from_flags(f, f.num_classes)


def _user_errors():
    from deeplab_dpc.formats.dpc_spec import SpecError
    from deeplab_dpc.modeling.checkpoints import CheckpointError
    from deeplab_dpc.modeling.model import ModelConfigError

    return (
        WeightImportError,
        WeightSourceError,
        ModelConfigError,
        SpecError,
        CheckpointError,
        OSError,
    )


def main(argv):
    from absl import flags

    user_errors = _user_errors()

    f = flags.FLAGS
    try:
        if len(argv) > 1:
            raise WeightImportError(f"unexpected arguments: {' '.join(argv[1:])}")
        if not f.source:
            raise WeightImportError("--source: required (a .tflite file or model.ckpt)")
        from deeplab_dpc import command_line

        try:
            command_line.option_values(_options())
        except ValueError as e:
            raise WeightImportError(errors.one_line(e)) from None
        try:  # every flag is checked before TensorFlow reads or builds anything
            weight_sources.detect_kind(f.source)
        except WeightSourceError as e:
            raise WeightImportError(f"--source: {errors.one_line(e)}") from None
        _check_output(f.output)
        config = config_from_flags(f)
        report, prefix = import_weights(
            f.source, config, f.output, f.initialize_last_layer, f.backbone_only
        )
    except user_errors as e:
        errors.fail(e, "import_weights")
    for line in format_report(report):
        print(line)
    print(f"wrote {prefix} (+ {artefacts.MODEL_CONFIG}, {REPORT_FILENAME})")


def _options():
    """The tool's flags: the model group, the head, and its own."""
    from deeplab_dpc import command_line
    from deeplab_dpc.core.option_table import Option

    return (
        Option("source", "string", None,
               "Official weights: a .tflite file or a TF1 model.ckpt prefix."),
        Option("output", "string", None, "Checkpoint directory to write (atomically)."),
        *command_line.MODEL_OPTIONS,
        command_line.HEAD_OPTION,
        Option("num_classes", "integer", 21,
               "Classes of the logits layer; another count than the source's gets "
               "fresh logits.", low=1),
        Option("initialize_last_layer", "boolean", True,
               "Load logits/semantic too (DeepLab's flag)."),
        Option("backbone_only", "boolean", False,
               "Load the backbone alone; head, decoder and logits start fresh."),
    )  # fmt: skip


def define_flags():
    from deeplab_dpc import command_line

    command_line.define_options(_options())


if __name__ == "__main__":
    from deeplab_dpc import command_line

    define_flags()
    command_line.run(main, "import_weights")
