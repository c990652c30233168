"""Fuzzing DPC spec files and objects: every bad one is a one-line SpecError.

A seeded generator mutates valid specs (values of every type at every field,
unknown and duplicate fields, whole branches, the top level) and their text
(NaN / Infinity literals, huge numbers, deep nesting, BOM, UTF-16, invalid
UTF-8, truncation, flipped bytes, oversize files, odd file names). Each case
must load or fail with exactly `SpecError`, in one printable line that names
the file and, for a field-level fault, the branch and field.
"""

import json
import os

import numpy as np
import pytest

from deeplab_dpc.formats import dpc_spec as spec_lib

FIELDS = {"conv": ("op", "kernel", "rate", "input"), "pyramid_pooling": ("op", "grid_size", "input")}  # fmt: skip

# (raw JSON text, fails while parsing the JSON rather than at a field)
TOKENS = [
    ("1e400", False), ("-1e400", False), ("1.5", False), ("-0.0", False),
    ("NaN", True), ("Infinity", True), ("-Infinity", True),
    ("1" + "0" * 19, False), ("1" + "0" * 400, False), ("1" + "0" * 4000, False),
    ("9" * 5000, True), ("-" + "9" * 30, False),
    ("true", False), ("false", False), ("null", False),
    ('""', False), ('"conv"', False), ('"pyramid_pooling"', False),
    ('"\\n\\u0000x"', False), ('"\\ud800"', False), ('"' + "a" * 100000 + '"', False),
    ("[]", False), ("[1]", False), ("[1, 2, 3]", False), ("[3, 3]", False),
    ("[[3, 3]]", False), ('["3", "3"]', False), ("[1e400, 1]", False),
    ("[true, 1]", False), ("[null]", False), ("{}", False), ('{"a": 1}', False),
    ("[" * 5 + "]" * 5, False), ("[" * 60 + "]" * 60, False),
    ("[" * 100000 + "]" * 100000, True), ('{"op": 1, "op": 2}', True),
]  # fmt: skip
FIELD_NAMES = ["rates", "", "\n", "a" * 1000, "\ud800", "Op", " op", "input\u0000"]
SENTINEL = "@@TOKEN@@"


def _base_spec(rng):
    spec = spec_lib.sample_spec(rng, int(rng.integers(1, 6)))
    for branch in spec:  # raw forms as users write them, sometimes
        if branch["op"] == "conv" and branch["kernel"] == [1, 1] and rng.random() < 0.5:
            branch["kernel"] = 1
            del branch["rate"]
    return spec


def _text(obj, token):
    return json.dumps(obj).replace(json.dumps(SENTINEL), token)


def spec_file_cases(seed=0, n=300):
    """Yields (name, file name, content bytes, expected fragments or None).

    Fragments: text the error must hold (besides the file); None: the case
    may load (its validity is not known up front) or fail anywhere.
    """
    rng = np.random.default_rng(seed)
    kinds = ["field"] * 6 + ["newfield", "dup", "branch", "top", "append"] * 2
    kinds += ["bom", "utf16", "badbytes", "truncate", "flip", "huge", "empty", "nul"]
    for case in range(n):
        spec = _base_spec(rng)
        kind = kinds[case % len(kinds)]
        name = "spec.json" if rng.random() < 0.8 else "odd\nname \u00e9.json"
        i = int(rng.integers(len(spec)))
        raw, json_level = TOKENS[int(rng.integers(len(TOKENS)))]
        expect = None
        if kind == "field":  # may be valid (e.g. [3, 3] for a rate): may load
            field = list(spec[i])[int(rng.integers(len(spec[i])))]
            spec[i][field] = SENTINEL
            text = _text(spec, raw)
            if not json_level:
                expect = [
                    f"branch {i}",
                    f"field '{field}'" if field != "op" else "field '",
                ]
        elif kind == "newfield":
            field = FIELD_NAMES[int(rng.integers(len(FIELD_NAMES)))]
            spec[i][field] = 1
            text = json.dumps(spec)
            expect = [f"branch {i}", "unknown field"]
        elif kind == "dup":
            field = list(spec[i])[int(rng.integers(len(spec[i])))]
            body = json.dumps(spec[i])
            dup = (
                body[:-1] + f", {json.dumps(field)}: {json.dumps(spec[i][field])}" + "}"
            )
            spec[i] = SENTINEL
            text = _text(spec, dup)
            expect = ["duplicate field", field]
        elif kind in ("branch", "append"):
            if kind == "append":
                i = len(spec)
                spec.append(SENTINEL)
            else:
                spec[i] = SENTINEL
            text = _text(spec, raw)
            if not json_level:
                expect = [f"branch {i}"]
        elif kind == "top":
            text = raw
            expect = [] if raw not in ("[]",) else ["at least one branch"]
        else:
            text = json.dumps(spec)
        data = text.encode("utf-8", "surrogatepass")
        if kind == "bom":
            data = b"\xef\xbb\xbf" + data
            expect = "valid"
        elif kind == "utf16":
            data = text.encode("utf-16")
            expect = ["not UTF-8"]
        elif kind == "badbytes":
            at = int(rng.integers(len(data)))
            data = data[:at] + bytes([0xFF, 0xC0, 0x80]) + data[at:]
            expect = ["not UTF-8"]
        elif kind == "truncate":
            data = data[: int(rng.integers(len(data)))]
        elif kind == "flip":
            at = int(rng.integers(len(data)))
            data = (
                data[:at]
                + bytes([data[at] ^ (1 << int(rng.integers(8)))])
                + data[at + 1 :]
            )
        elif kind == "huge":
            data = data + b" " * (spec_lib.MAX_SPEC_BYTES + 1 - len(data))
            expect = ["larger than"]
        elif kind == "empty":
            data = b" \n" * int(rng.integers(3))
            expect = ["invalid JSON"]
        elif kind == "nul":
            data = data[:1] + b"\x00" + data[1:]
            expect = ["invalid JSON"]
        if json_level and kind in ("field", "branch", "append", "top"):
            expect = ["invalid JSON"]
        yield f"{case}:{kind}", name, data, expect


def check_spec_file(module, directory, case):
    """None when `module.load_spec` handles the case, else what went wrong."""
    label, name, data, expect = case
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    try:
        module.load_spec(path)
    except module.SpecError as e:
        message = str(e)
        if type(e) is not module.SpecError:
            return f"{label}: {type(e).__name__}"
        if not message.isprintable():
            return f"{label}: not one printable line: {message[:200]!r}"
        shown = path.replace("\n", "\\n")
        if not message.startswith(shown):
            return f"{label}: does not name the file: {message[:200]!r}"
        if expect == "valid":
            return f"{label}: should load: {message[:200]!r}"
        for fragment in expect or []:
            if fragment not in message:
                return f"{label}: lacks {fragment!r}: {message[:200]!r}"
        if len(message) > 500:
            return f"{label}: message of {len(message)} characters"
        return None
    except BaseException as e:  # noqa: BLE001 - the point is to catch anything
        return f"{label}: {type(e).__name__}: {str(e)[:100]!r}"
    finally:
        os.remove(path)
    if expect not in (None, "valid") and not label.endswith(":field"):
        return f"{label}: loaded, expected an error holding {expect}"
    return None


def test_spec_files_fuzzed(tmp_path):
    cases = list(spec_file_cases(seed=14, n=300))
    problems = [p for p in (check_spec_file(spec_lib, tmp_path, c) for c in cases) if p]
    assert not problems, f"{len(problems)} of {len(cases)}: " + "; ".join(problems[:5])
    assert os.listdir(tmp_path) == []


class _Weird:
    def __repr__(self):
        raise RuntimeError("no repr")


def python_values():
    cyclic = []
    cyclic.append(cyclic)
    return [
        10**5000, -(10**5000), float("nan"), float("inf"), np.int64(3), np.float32(3),
        np.array([3, 3]), {3}, b"3", (3, 3), (1, 6), cyclic, _Weird(), {1: 2},
        "conv", None, True, [np.int64(1), np.int64(6)], [2**70, 1], [[1, 6]],
    ]  # fmt: skip


def spec_object_cases(seed=1, n=200):
    """Yields (spec object, fragments) with one branch field, branch or key made odd."""
    rng = np.random.default_rng(seed)
    values = python_values()
    for case in range(n):
        spec = _base_spec(rng)
        i = int(rng.integers(len(spec)))
        value = values[case % len(values)]
        if case % 5 == 4:
            spec[i] = value
            yield spec, [f"branch {i}"]
        elif case % 5 == 3:
            spec[i][value if isinstance(value, (int, str, bytes)) else "x"] = 1
            yield spec, [f"branch {i}"]
        else:
            field = list(spec[i])[int(rng.integers(len(spec[i])))]
            spec[i][field] = value
            yield spec, None  # some values are valid (numpy ints, tuples)


def check_spec_object(module, obj, fragments):
    try:
        module.parse_spec(obj, source="obj")
    except module.SpecError as e:
        message = str(e)
        if not message.isprintable() or not message.startswith("obj: "):
            return f"not one line naming the source: {message[:100]!r}"
        if len(message) > 500:
            return f"message of {len(message)} characters"
        missing = [f for f in fragments or [] if f not in message]
        return f"lacks {missing}: {message[:100]!r}" if missing else None
    except BaseException as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e)[:80]!r}"
    return None if fragments is None else "accepted"


def test_spec_objects_fuzzed():
    cases = list(spec_object_cases())
    problems = [p for p in (check_spec_object(spec_lib, *c) for c in cases) if p]
    assert not problems, f"{len(problems)} of {len(cases)}: " + "; ".join(problems[:5])


def test_strict_json_rules_and_bom(tmp_path):
    path = tmp_path / "s.json"
    good = json.dumps([{"op": "conv", "kernel": 1, "input": -1}])
    path.write_bytes(b"\xef\xbb\xbf" + good.encode())
    assert spec_lib.load_spec(path)[0]["kernel"] == [1, 1]
    for text, fragment in [
        ('[{"op": "conv", "kernel": NaN, "input": -1}]', "NaN is not valid JSON"),
        ('[{"op": "conv", "op": "conv", "kernel": 1, "input": -1}]', "duplicate field"),
        ("[" * 50000 + "]" * 50000, "nested too deeply"),
        ("[" + "9" * 5000 + "]", "invalid JSON"),
    ]:
        path.write_text(text)
        with pytest.raises(spec_lib.SpecError, match=fragment):
            spec_lib.load_spec(path)


@pytest.mark.parametrize("seed", range(3))
def test_save_spec_of_a_bad_spec_leaves_nothing(tmp_path, seed):
    target = tmp_path / "out" / "cell.json"
    for obj, _ in spec_object_cases(seed=seed, n=30):
        try:
            spec_lib.save_spec(obj, target)
        except spec_lib.SpecError:
            assert not target.exists()
        else:
            assert spec_lib.load_spec(target) == spec_lib.parse_spec(obj)
            target.unlink()
        leftovers = os.listdir(target.parent) if target.parent.exists() else []
        assert leftovers == []
