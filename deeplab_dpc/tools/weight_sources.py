"""Readers for official DeepLab weights: TFLite files and TF1 (slim) checkpoints.

Both readers return a `Source`: the convolution units of the file keyed by
their original DeepLab variable scope (`MobilenetV2/expanded_conv_1/expand`,
`aspp0`, `dense_prediction_cell/branch0_depthwise`, `logits/semantic`), with
kernels already in the Keras layout, plus every other tensor of the file with
the reason it is not a unit, so the importer can account for all of them.

A unit's arrays are keyed by role: `kernel` (Keras layout: Conv2D
[kh, kw, in, out], DepthwiseConv2D [kh, kw, in, 1]), `bias`, and for unfolded
batch norm `gamma`, `beta`, `moving_mean`, `moving_variance`.

- TFLite (DeepLab models converted by TOCO, e.g. `deeplabv3_257_mv_gpu.tflite`):
  batch norm is folded into each conv. Units are found through the graph, not
  through tensor names alone: every CONV_2D / DEPTHWISE_CONV_2D op whose
  weight tensor is named `<scope>/weights` or `<scope>/depthwise_weights` is a
  unit, and its bias is the op's third input whatever that tensor is called
  (TOCO calls it `Conv2D_bias`, `depthwise_bias`, ...). Weights are stored
  [out, kh, kw, in] (depthwise [1, kh, kw, channels]) and are transposed.
  Each unit also records the op's strides and dilation, so the importer can
  warn when the model's output stride differs from the file's. float16
  weights behind a DEQUANTIZE op are read as float32; int8 / uint8 quantized
  models are refused. The flatbuffer is parsed with the schema module that
  ships with TensorFlow (`tensorflow.lite.python.schema_py_generated`, not a
  public API: the interpreter does not expose op options, and the tests
  would catch a release that moved it).
- TF1 checkpoints (`model.ckpt-N` index + data, as in the DeepLab model zoo),
  read with `tf.train.load_checkpoint`: a unit is a `<scope>/weights` or
  `<scope>/depthwise_weights` variable with `<scope>/biases` and
  `<scope>/BatchNorm/{gamma,beta,moving_mean,moving_variance}` beside it.
  slim already stores kernels in the Keras layout. Optimizer slots
  (`.../Momentum`), `global_step` and the like are reported, not used.
  Deviation: slim's unsplit `separable_conv2d` (one scope holding
  `depthwise_weights` and `pointwise_weights`, DeepLab's
  `regularize_depthwise=True`) is not recognised; the released models use the
  split form.
"""

import collections
import glob
import os

import numpy as np

TFLITE = "tflite"
TF1_CHECKPOINT = "tf1_checkpoint"

KERNEL_LEAVES = ("weights", "depthwise_weights")
BATCH_NORM_LEAVES = ("gamma", "beta", "moving_mean", "moving_variance")
BIAS_LEAF = "biases"

# Trailing name parts of TF1 variables that are training state, not weights.
_TRAINING_STATE_LEAVES = (
    "Momentum",
    "Adam",
    "Adam_1",
    "RMSProp",
    "RMSProp_1",
    "ExponentialMovingAverage",
)

SourceUnit = collections.namedtuple(
    "SourceUnit", ["scope", "arrays", "names", "source_shapes", "strides", "dilation"]
)
SourceUnit.__doc__ = """One conv of the source.

`arrays`: role -> float32 array (kernel in the Keras layout); `names`: role ->
the tensor name in the file; `source_shapes`: role -> shape as stored;
`strides`, `dilation`: (h, w) from a TFLite op, None for checkpoints.
"""

Source = collections.namedtuple("Source", ["path", "kind", "units", "others"])
Source.__doc__ = """What a file holds: `units` (scope -> SourceUnit) and `others`
(tensor name -> (shape, reason it is not part of a unit))."""


class WeightSourceError(ValueError):
    """A source that cannot be read; the message names the file and the problem."""


def read_source(path):
    """Reads a DeepLab TFLite file or TF1 checkpoint; returns a `Source`."""
    kind, resolved = detect_kind(path)
    if kind == TFLITE:
        return read_tflite(resolved)
    return read_tf1_checkpoint(resolved)


def detect_kind(path):
    """Returns (kind, path or checkpoint prefix) or raises `WeightSourceError`."""
    if not path or not (os.path.exists(path) or os.path.exists(path + ".index")):
        raise WeightSourceError(f"{path}: no such file or checkpoint")
    if os.path.isfile(path):
        with open(path, "rb") as f:
            header = f.read(8)
        if header[4:8] == b"TFL3":
            return TFLITE, path
    prefix = _checkpoint_prefix(path)
    if prefix is not None:
        return TF1_CHECKPOINT, prefix
    hint = ""
    if path.endswith(".pb"):
        hint = " (a frozen graph: pass the model.ckpt prefix from the same archive)"
    raise WeightSourceError(
        f"{path}: not a model: neither a TFLite file (no TFL3 identifier) "
        f"nor a TF1 checkpoint (no {os.path.basename(path)}.index){hint}"
    )


def _checkpoint_prefix(path):
    """`model.ckpt-N` for a prefix, its .index / .data file, or a directory."""
    if os.path.isdir(path):
        indexes = sorted(glob.glob(os.path.join(path, "*.index")))
        if len(indexes) == 1:
            return indexes[0][: -len(".index")]
        if len(indexes) > 1:
            import tensorflow as tf

            return tf.train.latest_checkpoint(path)
        return None
    for suffix in (".index", ".data-"):
        if suffix in path:
            path = path[: path.rindex(suffix)]
    return path if os.path.isfile(path + ".index") else None


# --- TFLite ------------------------------------------------------------------


def _tflite_schema():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def _parse_flatbuffer(path):
    schema = _tflite_schema()
    with open(path, "rb") as f:
        buf = f.read()
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(buf, 0))
    except Exception as e:  # the flatbuffer library raises assorted errors
        raise WeightSourceError(f"{path}: unreadable TFLite file ({e})") from e
    if not model.subgraphs or len(model.subgraphs) != 1:
        count = len(model.subgraphs or [])
        raise WeightSourceError(f"{path}: expected one subgraph, found {count}")
    return model


def _op_names(model):
    schema = _tflite_schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    return [
        names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        for code in model.operatorCodes
    ]


def _numpy_dtype(type_code):
    schema = _tflite_schema()
    types = {v: k for k, v in vars(schema.TensorType).items() if k.isupper()}
    name = types.get(type_code, str(type_code))
    return name, {"FLOAT32": np.float32, "FLOAT16": np.float16}.get(name)


def _tflite_constants(path, model):
    """Index -> (name, stored array or None when not float, type name)."""
    graph = model.subgraphs[0]
    constants = {}
    for index, tensor in enumerate(graph.tensors):
        data = model.buffers[tensor.buffer].data if tensor.buffer else None
        if data is None or len(data) == 0:
            continue
        name = tensor.name.decode()
        type_name, dtype = _numpy_dtype(tensor.type)
        shape = tuple(int(d) for d in tensor.shape)
        array = None
        if dtype is not None:
            array = np.frombuffer(bytes(data), dtype=dtype).reshape(shape)
        constants[index] = (name, array, type_name, shape)
    return constants


def read_tflite(path):
    """Reads the conv units of a float DeepLab TFLite model."""
    model = _parse_flatbuffer(path)
    graph = model.subgraphs[0]
    op_names = _op_names(model)
    constants = _tflite_constants(path, model)
    producers = {}
    for op in graph.operators:
        for out in op.outputs:
            producers[int(out)] = op
    units, used = {}, set()
    for op in graph.operators:
        kind = op_names[op.opcodeIndex]
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        unit = _tflite_unit(path, op, kind, constants, producers, op_names)
        if unit is None:
            continue
        units[unit.scope] = unit
        used.update(unit.names.values())
    others = {}
    for name, _, type_name, shape in constants.values():
        if name in used:
            continue
        if type_name not in ("FLOAT32", "FLOAT16"):
            reason = f"{type_name.lower()} constant (an op parameter, not a weight)"
        else:
            reason = "float constant that is not the weight of a DeepLab-named conv"
        others[name] = (shape, reason)
    return Source(path, TFLITE, units, others)


def _tflite_input(index, constants, producers, op_names):
    """The constant behind an op input, looking through DEQUANTIZE."""
    if index in constants:
        return constants[index]
    op = producers.get(index)
    if op is not None and op_names[op.opcodeIndex] == "DEQUANTIZE":
        return constants.get(int(op.inputs[0]))
    return None


def _tflite_unit(path, op, kind, constants, producers, op_names):
    inputs = [int(i) for i in op.inputs]
    weights = _tflite_input(inputs[1], constants, producers, op_names)
    if weights is None:
        return None
    name, array, type_name, shape = weights
    scope, _, leaf = name.rpartition("/")
    if leaf not in KERNEL_LEAVES:
        return None
    if array is None:
        raise WeightSourceError(
            f"{name}: {type_name.lower()} weights: quantized TFLite models are "
            "not supported, use a float model"
        )
    if len(shape) != 4 or (kind == "DEPTHWISE_CONV_2D" and shape[0] != 1):
        raise WeightSourceError(
            f"{name}: shape {list(shape)} is not a {kind} kernel "
            "([out, kh, kw, in], depthwise [1, kh, kw, channels])"
        )
    arrays = {"kernel": np.transpose(array, (1, 2, 3, 0)).astype(np.float32)}
    names, shapes = {"kernel": name}, {"kernel": shape}
    bias = None
    if len(inputs) > 2 and inputs[2] >= 0:
        bias = _tflite_input(inputs[2], constants, producers, op_names)
    if bias is not None and bias[1] is not None:
        names["bias"], arrays["bias"], _, shapes["bias"] = bias
        arrays["bias"] = arrays["bias"].astype(np.float32)
    options = op.builtinOptions
    strides = (int(options.strideH), int(options.strideW))
    dilation = (int(options.dilationHFactor), int(options.dilationWFactor))
    return SourceUnit(scope, arrays, names, shapes, strides, dilation)


# --- TF1 checkpoints -----------------------------------------------------------


def read_tf1_checkpoint(prefix):
    """Reads the conv units of a TF1 (slim) DeepLab checkpoint."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as e:
        message = str(e).strip().splitlines()[0]
        raise WeightSourceError(f"{prefix}: unreadable checkpoint ({message})") from e
    if "_CHECKPOINTABLE_OBJECT_GRAPH" in shapes:
        raise WeightSourceError(
            f"{prefix}: a TF2 object-based checkpoint, not a TF1 DeepLab one; "
            "if it is one of ours, pass it to --tf_initial_checkpoint directly"
        )
    units, used = {}, set()
    for name in sorted(shapes):
        scope, _, leaf = name.rpartition("/")
        if leaf not in KERNEL_LEAVES or not scope:
            continue
        unit = _tf1_unit(reader, shapes, scope, name)
        units[scope] = unit
        used.update(unit.names.values())
    others = {
        name: (tuple(shape), _tf1_reason(name))
        for name, shape in shapes.items()
        if name not in used
    }
    return Source(prefix, TF1_CHECKPOINT, units, others)


def _tf1_unit(reader, shapes, scope, kernel_name):
    names = {"kernel": kernel_name}
    bias_name = f"{scope}/{BIAS_LEAF}"
    if bias_name in shapes:
        names["bias"] = bias_name
    present = [
        leaf for leaf in BATCH_NORM_LEAVES if f"{scope}/BatchNorm/{leaf}" in shapes
    ]
    if present:
        # slim's batch_norm without `scale` has no gamma; the rest must be there.
        missing = [leaf for leaf in BATCH_NORM_LEAVES[1:] if leaf not in present]
        if missing:
            raise WeightSourceError(
                f"{scope}/BatchNorm/{missing[0]}: missing beside "
                f"{scope}/BatchNorm/{present[0]}"
            )
        for leaf in present:
            names[leaf] = f"{scope}/BatchNorm/{leaf}"
    arrays = {
        role: np.asarray(reader.get_tensor(name), dtype=np.float32)
        for role, name in names.items()
    }
    source_shapes = {role: tuple(shapes[name]) for role, name in names.items()}
    return SourceUnit(scope, arrays, names, source_shapes, None, None)


def _tf1_reason(name):
    leaf = name.rpartition("/")[2]
    if name == "global_step" or leaf in _TRAINING_STATE_LEAVES:
        return "training state (optimizer slot, step counter or moving average)"
    return "not the weight of a conv unit (no <scope>/weights beside it)"
