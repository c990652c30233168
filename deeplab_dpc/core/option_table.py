"""The one declarative form of an option: from a flag to a config field.

Every entry point and tool declares its options once, as a tuple of
`Option` rows (type, default, help, range or choices, the config field it
feeds). `command_line.define_options` generates the absl flags from a table
and `command_line.option_values` reads and checks them; library functions
that take the same options as arguments (`training.options.train_options`,
`search.auto_deeplab.options.search_options`) check them against the same
rows with `check_values`, so a range is written in one place and its message
is always `<name>: must be ...` (`errors.check_range`), with `--` before the
name on a command line.

TensorFlow- and absl-free (layer 0): library tables import it without
loading anything. Shared groups (the model, dataset and checkpoint-watching
flags) are declared in `command_line` and reused by the entry points.
"""

import dataclasses

from deeplab_dpc.core import common, errors

# Flag types: scalars; "enum" (absl enum, static choices); "list" (absl
# comma list); "multi_float" (absl repeated float); "ints" / "floats"
# (DeepLab's multi-value flags: "a,b" or the flag repeated, parsed here).
KINDS = ("string", "integer", "float", "boolean", "enum", "list", "multi_float",
         "ints", "floats")  # fmt: skip
MULTI = ("list", "multi_float", "ints", "floats")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: flag `name`, its type, default and help, what it may be.

    low / high / low_open: the range of a number (or of each value of a
    multi-value option), None: no bound. choices: the values a string may
    take (a tuple, or a zero-argument callable for lists known only after an
    import, such as the search spaces). field: the config field or argument
    it feeds (default: its name). alias: a second flag name (DeepLab's).
    required: an empty string is refused. shared: declared by a shared group
    (`command_line`); a table lists it only to pass it on. cli: False for a
    library argument that has no flag.
    """

    name: str
    kind: str
    default: object = None
    help: str = ""
    low: object = None
    high: object = None
    low_open: bool = False
    choices: object = None
    field: str = None
    alias: str = None
    required: bool = False
    shared: bool = False
    cli: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")

    @property
    def target(self):
        return self.field or self.name

    def known(self):
        """The allowed values (choices resolved), or None."""
        return self.choices() if callable(self.choices) else self.choices


def _label(option, prefix):
    return f"{prefix}{option.name}"


def check(option, value, prefix="--", error=ValueError):
    """`value` unless it is out of `option`'s range or choices: `error` naming it.

    Messages: `--momentum: must be a finite number in [0.0, 1.0], got 2`,
    `--space: unknown 'x'; known: full, aspp_subsets`, `--workdir: must not
    be empty`. `prefix` is `--` for a flag, empty for a config field.
    """
    name = _label(option, prefix)
    if option.required and (value is None or value == ""):
        raise error(f"{name}: must not be empty")
    if value is None:
        return value
    values = value if option.kind in MULTI else [value]
    if option.low is not None or option.high is not None:
        for v in values:
            errors.check_range(name, v, option.low, option.high, option.low_open, error)
    known = option.known()
    if known is not None:
        for v in values:
            if v not in known:
                shown = ", ".join("" if k is None else str(k) for k in known)
                raise error(f"{name}: unknown {v!r}; known: {shown}")
    return value


def check_values(table, values, prefix="--", error=ValueError):
    """Checks each value of `values` ({name: value}) against its row of `table`."""
    for option in table:
        if option.name in values:
            check(option, values[option.name], prefix, error)
    return values


def defaults(table):
    """{name: default} of a table."""
    return {option.name: option.default for option in table}


def by_name(table, *names):
    """The rows of `table` named `names`, in that order (a shared group's subset)."""
    rows = {option.name: option for option in table}
    return tuple(rows[name] for name in names)


def check_crop(name, crop, error=ValueError):
    """[h, w] of a crop option, or `error` naming `name`: the one crop check.

    Two integers, each side in [MIN_CROP_SIZE, MAX_CROP_SIDE]. The minimum is
    33 = 1 + 32 (`common.MIN_CROP_SIZE`): every network here (DeepLab's
    backbones and Auto-DeepLab's supernet, whose deepest level is 1/32)
    downsamples 32x, and a side of 33 is the smallest whose 1/32 feature map
    is 2 pixels wide (ceil(33 / 32)), so that the 3x3 convs, the image
    pooling and the align_corners upsampling act on a neighbourhood and not
    on one constant pixel; 33 is also the smallest of DeepLab's k * 32 + 1
    sizes. Used by train.py, search.py, export_model.py, the model_stats
    tool and the Auto-DeepLab options.
    """
    try:
        sides = [integer(v) for v in crop]
    except (TypeError, ValueError):
        raise error(f"{name}: needs two integers h,w, got {_shown(crop)}") from None
    if len(sides) != 2:
        raise error(f"{name}: needs 2 values (h,w), got {_shown(crop)}")
    if max(sides) > common.MAX_CROP_SIDE:
        raise error(
            f"{name}: {sides[0]}x{sides[1]} is too large; each side must be at "
            f"most {common.MAX_CROP_SIDE}"
        )
    if min(sides) < common.MIN_CROP_SIZE:
        raise error(
            f"{name}: {sides[0]}x{sides[1]} is too small; each side must be at "
            f"least {common.MIN_CROP_SIZE} (the networks downsample 32x)"
        )
    return sides


def integer(text):
    """An int from an int or a decimal string ("33", " -4"); ValueError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    text = str(text).strip()
    if not text.lstrip("-").isdigit():
        raise ValueError(text)
    return int(text)


def _shown(crop):
    if isinstance(crop, str):
        return crop or "nothing"
    return ",".join(map(str, crop)) or "nothing"
