"""Per-layer parameters and multiply-adds of a DeepLab / DPC model (library).

Used by the command line `deeplab_dpc.tools.model_stats` and by the search
(`search.proxy.cell_cost`). One row per conv unit (`deeplab_dpc.modeling.naming`): `name` (path whose first part is
backbone, head, decoder or logits), `params` (conv kernel + bias weights),
`bn_params` (the unit's batch-norm weights: gamma, beta, moving mean and
moving variance, 4 per channel) and `madds` (multiply-adds of the conv for one
image of `crop_size`: out_h * out_w * k_h * k_w * c_in * c_out, divided by
c_in for depthwise). Pooling, resizing, additions and batch norm count no
multiply-adds, as in the paper's and MobileNet's accounting.
"""

import keras
import tensorflow as tf

from deeplab_dpc.modeling import naming

_SUMMARY_KEYS = ("params", "bn_params", "madds")


def _record_conv_shapes(model, crop_size):
    """Traces the model once (no compute) and returns {unit path: (in, out) shapes}."""
    shapes, originals = {}, []
    for unit in naming.iter_units(model):
        conv = unit.conv
        original = conv.call

        def wrapped(inputs, *args, _call=original, _path=unit.path, **kwargs):
            outputs = _call(inputs, *args, **kwargs)
            shapes[_path] = (tuple(inputs.shape), tuple(outputs.shape))
            return outputs

        object.__setattr__(conv, "call", wrapped)
        originals.append(conv)
    try:
        spec = tf.TensorSpec([1, crop_size[0], crop_size[1], 3], tf.float32)
        tf.function(model.__call__, autograph=False).get_concrete_function(spec)
    finally:
        for conv in originals:
            object.__delattr__(conv, "call")
    return shapes


def _conv_madds(conv, out_shape):
    kh, kw = conv.kernel.shape[:2]
    c_in = conv.kernel.shape[2]
    out_h, out_w = out_shape[1], out_shape[2]
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        return out_h * out_w * kh * kw * c_in
    return out_h * out_w * kh * kw * c_in * conv.kernel.shape[3]


def compute_stats(model, crop_size):
    """Rows {"name", "params", "bn_params", "madds"} for every conv unit of `model`."""
    shapes = _record_conv_shapes(model, crop_size)
    rows = []
    for unit in naming.iter_units(model):
        params = sum(int(w.numpy().size) for w in unit.conv.weights)
        bn_params = (
            sum(int(w.numpy().size) for w in unit.bn.weights)
            if unit.bn is not None
            else 0
        )
        rows.append(
            {
                "name": unit.path,
                "params": params,
                "bn_params": bn_params,
                "madds": int(_conv_madds(unit.conv, shapes[unit.path][1])),
            }
        )
    return rows


def summarize(rows):
    """Totals per top-level module (in first-seen order) and overall."""
    totals = {}
    for row in rows:
        module = naming.top_level(row["name"])
        entry = totals.setdefault(module, dict.fromkeys(_SUMMARY_KEYS, 0))
        for key in _SUMMARY_KEYS:
            entry[key] += row[key]
    totals["total"] = {
        k: sum(t[k] for t in list(totals.values())) for k in _SUMMARY_KEYS
    }
    return totals


def _human(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def format_table(rows, totals):
    width = max(len(r["name"]) for r in rows + [{"name": "total: backbone"}])
    lines = [f"{'layer':<{width}}  {'params':>10}  {'bn_params':>10}  {'madds':>10}"]
    for r in rows:
        lines.append(
            f"{r['name']:<{width}}  {r['params']:>10}  {r['bn_params']:>10}  {_human(r['madds']):>10}"
        )
    lines.append("-" * len(lines[0]))
    for module, t in totals.items():
        name = "total" if module == "total" else f"total: {module}"
        lines.append(
            f"{name:<{width}}  {t['params']:>10}  {t['bn_params']:>10}  {_human(t['madds']):>10}"
        )
    return "\n".join(lines)
