"""The package's layout holds: one folder per side, imports pointing only downward (so no cycle), the model files
importing nothing of the package but each other (they travel alone as the Hub's remote code), and the module names
of release 0.1.0 still importing, with a warning naming their new place."""

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

import vanilla_transformer
from vanilla_transformer import MOVED_MODULES

PACKAGE = Path(vanilla_transformer.__file__).parent
# Each side of the package may import from the sides of a lower level only (and from its own folder)
LEVELS = {
    "configuration_vanilla_transformer": 0,
    "modeling_vanilla_transformer": 0,
    "conversion": 1,
    "data": 1,
    "training": 2,
    "serving": 2,
    "analysis": 3,
    "recipes": 4,
}


def package_modules() -> dict[str, Path]:
    """Dotted names inside the package (`serving.engines`, `modeling_vanilla_transformer`) -> their files."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path) -> set[str]:
    """The package's modules that module `name` imports, at any depth of its code, as dotted names in the package."""
    is_package = path.name == "__init__.py"
    parts = name.split(".") if name else []
    here = parts if is_package else parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = here[: len(here) - (node.level - 1)]
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            # `from . import x` or `from .engines import load_engine`: x may be a module or a name
            found |= {f"{target}.{alias.name}" if target else alias.name for alias in node.names} | {target}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            dotted = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found |= {d.removeprefix("vanilla_transformer.") for d in dotted if d.startswith("vanilla_transformer.")}
    return {module for module in found if module in package_modules()}


def side(module: str) -> str:
    return module.split(".")[0]


def test_every_side_of_the_package_is_a_folder_of_a_known_level():
    sides = {side(name) for name in package_modules() if name}
    assert sides == set(LEVELS), "a new module belongs in one of the folders, or LEVELS names its new side"


def test_imports_point_only_downward_and_the_model_files_import_nothing_else():
    wrong = []
    for name, path in package_modules().items():
        if not name:
            continue  # the package's __init__ registers the model and re-exports from every side
        for target in imported_modules(name, path):
            same_side = side(target) == side(name) and LEVELS[side(name)] > 0
            if not (same_side or LEVELS[side(target)] < LEVELS[side(name)] or target == "configuration_vanilla_transformer"):
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_no_import_cycle_inside_a_side():
    graph = {name: imported_modules(name, path) for name, path in package_modules().items() if name}
    state = {}

    def visit(module, trail):
        if state.get(module) == "open":
            raise AssertionError(f"import cycle: {' -> '.join([*trail, module])}")
        if state.get(module) == "done":
            return
        state[module] = "open"
        for target in graph.get(module, ()):
            # A folder's __init__ re-exports its modules: importing a module of the folder runs it first, harmlessly
            if target != side(module) or "." not in module:
                visit(target, [*trail, module])
        state[module] = "done"

    for module in graph:
        visit(module, [])


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_module_names_of_release_0_1_0_import_with_a_warning_naming_the_new_place(old):
    new = importlib.import_module(f"vanilla_transformer.{MOVED_MODULES[old]}")
    sys.modules.pop(f"vanilla_transformer.{old}", None)
    with pytest.warns(FutureWarning, match=rf"`vanilla_transformer.{old}` moved to `vanilla_transformer.{MOVED_MODULES[old]}`"):
        moved = importlib.import_module(f"vanilla_transformer.{old}")
    public = {key for key in vars(new) if not key.startswith("_")}
    assert public and all(getattr(moved, key) is getattr(new, key) for key in public)


def test_the_documented_imports_of_release_0_1_0_work_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from vanilla_transformer.serving import export_model, load_engine, translate  # noqa: F401
        from vanilla_transformer.training import DataTrainingArguments, ModelArguments, run_translation  # noqa: F401
    sys.modules.pop("vanilla_transformer.inference", None)
    with pytest.warns(FutureWarning):
        from vanilla_transformer.inference import translate as old_translate
    assert old_translate is translate
