"""The package's import graph: no cycle, no module importing a layer above it.

Reads every module of `deeplab_dpc` with `ast` (no import, no TensorFlow), so
it runs in a fraction of a second. The layer order is written here once and
explained in g3doc/architecture.md. A module may import its own unit (the same
package or module), and any unit of a lower layer; units that share a layer
are siblings and may not import each other (training and evaluation both use
`summaries`, and neither imports the other). Lazy imports inside functions
count like any other.
"""

import ast
import glob
import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "deeplab_dpc"

# Lowest first. Each entry is one layer: a tuple of units (a module or a
# package, with everything inside it).
LAYERS = (
    ("core",),  # vocabulary, files, exit-2 contract, consoles, signals; no TF
    # DPC spec and Auto-DeepLab architecture formats (no TF); datasets
    ("formats", "data"),
    ("layers",),  # Keras layers
    ("backbones",),
    ("modeling",),  # model, inference, complexity, naming, checkpoints
    ("reporting",),  # metrics, colour maps, TensorBoard summaries
    ("training", "evaluation"),
    ("search",),
    ("export",),
    ("command_line",),
    # command lines; a package's `__main__` (python -m) is one, above the
    # package it runs
    ("tools", "search.auto_deeplab.__main__"),
)


def _unit_of(module):
    """(layer index, unit) of a dotted module name below the package.

    The longest unit that holds the module (`search.auto_deeplab.__main__`
    before `search`).
    """
    parts = module.split(".")[1:]
    found = [
        (index, unit)
        for index, layer in enumerate(LAYERS)
        for unit in layer
        if parts[: len(unit.split("."))] == unit.split(".")
    ]
    return max(found, key=lambda f: len(f[1].split("."))) if found else None


def _module_names():
    """{dotted module name: file path} of every module in the package."""
    names = {}
    for directory, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            dotted = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
            names[dotted.removesuffix(".__init__")] = path
    return names


def _imports(path, modules):
    """The package modules that the file at `path` imports (anywhere in it)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from a.b import c`: the module a.b.c if it is one, else a.b.
            targets = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            assert not isinstance(node, ast.ImportFrom) or node.level == 0, (
                f"{path}: relative import; use absolute imports"
            )
            continue
        found.update(t for t in targets if t.split(".")[0] == PACKAGE)
    return found


def _graph():
    modules = _module_names()
    return {name: _imports(path, modules) for name, path in modules.items()}


GRAPH = _graph()


def test_every_module_has_a_layer():
    missing = sorted(m for m in GRAPH if m != PACKAGE and _unit_of(m) is None)
    assert not missing, (
        f"modules without a layer: {missing}; add each to LAYERS in "
        "tests/test_layering.py and to g3doc/architecture.md"
    )


def test_no_module_imports_a_layer_above_it_or_a_sibling():
    bad = []
    for module, imported in sorted(GRAPH.items()):
        if module == PACKAGE:
            continue
        layer, unit = _unit_of(module)
        for target in sorted(imported):
            if target == PACKAGE:
                continue
            their_layer, their_unit = _unit_of(target)
            if their_unit != unit and their_layer >= layer:
                kind = "a sibling" if their_layer == layer else "a layer above"
                bad.append(f"{module} imports {target} ({kind}: {their_unit})")
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    state, stack, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_layer_order_is_the_one_in_architecture_md():
    text = _architecture_md()
    start = text.index("<!-- layers -->")
    rows = [line for line in text[start:].splitlines()[1:] if line.startswith("| ")][
        2:
    ]  # skip the header and the rule
    documented = []
    for row in rows:
        cell = row.split("|")[2]
        documented.append(tuple(u.strip(" `") for u in cell.split(",")))
    assert tuple(documented) == LAYERS


def _architecture_md():
    path = os.path.join(ROOT, "g3doc", "architecture.md")
    if not os.path.exists(path):
        pytest.fail("g3doc/architecture.md is missing")
    return open(path, encoding="utf-8").read()


def test_architecture_md_names_every_module_and_only_modules_that_exist():
    """Each module file is named as `sub/module.py` (below deeplab_dpc/)."""
    text = _architecture_md()
    named = set(re.findall(r"`([\w./*-]+\.py)`", text))
    modules = {
        os.path.relpath(path, os.path.join(ROOT, PACKAGE)).replace(os.sep, "/")
        for path in _module_names().values()
        if os.path.basename(path) != "__init__.py"
    }
    missing = sorted(
        m for m in modules if m not in named and f"{PACKAGE}/{m}" not in named
    )
    assert not missing, f"g3doc/architecture.md does not name: {missing}"
    stale = sorted(
        name
        for name in named
        if not glob.glob(os.path.join(ROOT, PACKAGE, name))
        and not glob.glob(os.path.join(ROOT, name))
    )
    assert not stale, f"g3doc/architecture.md names files that do not exist: {stale}"


def test_every_unit_of_the_table_exists():
    base = os.path.join(ROOT, PACKAGE)
    absent = [
        unit
        for layer in LAYERS
        for unit in layer
        if not os.path.isdir(os.path.join(base, *unit.split(".")))
        and not os.path.isfile(os.path.join(base, *unit.split(".")) + ".py")
    ]
    assert not absent, f"units of LAYERS with no module or package: {absent}"


@pytest.mark.parametrize(
    "module, target, allowed",
    [
        ("deeplab_dpc.search.proxy", "deeplab_dpc.training.losses", True),
        ("deeplab_dpc.training.trainer", "deeplab_dpc.evaluation.evaluator", False),
        ("deeplab_dpc.modeling.naming", "deeplab_dpc.search.proxy", False),
        ("deeplab_dpc.data.records", "deeplab_dpc.formats.dpc_spec", False),
        ("deeplab_dpc.modeling.checkpoints", "deeplab_dpc.modeling.model", True),
        ("deeplab_dpc.layers.aspp", "deeplab_dpc.layers.conv", True),
    ],
)
def test_the_rule_itself(module, target, allowed):
    """The rule decides known cases right (so the test above can fail)."""
    (layer, unit), (their_layer, their_unit) = _unit_of(module), _unit_of(target)
    assert (their_unit == unit or their_layer < layer) is allowed


def _python_files():
    """Every Python file of the repository outside hidden and virtualenv folders."""
    for directory, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("workdir",)]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def test_every_import_of_the_package_names_a_module_that_exists():
    # A lazy import of a moved module (`from deeplab_dpc import model` after
    # model.py went to modeling/) is invisible to the layering graph above,
    # which maps it to the package itself, and fails only when that code runs.
    modules = _module_names()
    bad = []
    for path in _python_files():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == PACKAGE:
                    names = [f"{PACKAGE}.{a.name}" for a in node.names]
                else:
                    names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] == PACKAGE and name not in modules:
                    bad.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {name}")
    assert not bad, "imports of modules that do not exist:\n" + "\n".join(bad)
