"""Which package files a rule's code runs: the transitive closure of its imports, read statically.

Snakemake tracks a rule's script but not the modules it imports, so each rule lists the package
files it depends on as ``code=`` inputs; an edit of one of them then reruns exactly the rules
that import it. Hand-kept lists drift from the code, so the lists are derived here, from the
imports themselves, with the stdlib ``ast`` (no module is executed; the DAG builds in
milliseconds).

Counted: every ``import unlearnbench...`` and ``from unlearnbench... import`` (absolute, or
relative inside the package) anywhere in a file, function bodies included (a function-level
import runs when the stage runs), plus the ``__init__.py`` of every package on the way (Python
executes them). Not counted: imports under ``if TYPE_CHECKING:`` (they never run) and imports
outside the package. ``from pkg import name`` counts ``pkg/name.py`` when such a module exists,
else ``pkg/__init__.py`` alone.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "unlearnbench"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(module: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The file of dotted ``module`` (``unlearnbench.x.y``), or None if it is not ours."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    """Dotted name of a package file (``__init__.py`` names its package)."""
    parts = list(path.resolve().relative_to(package_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, lazy: bool = True):
    """Import statements of ``tree``, skipping the bodies of ``if TYPE_CHECKING:`` (and, when
    not ``lazy``, of functions: then only what importing the module itself runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if not lazy and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _with_parents(module: str) -> list[str]:
    """``a.b.c`` -> [a, a.b, a.b.c]: importing a module runs every package above it."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(
    source: str, here: str | None = None, is_package: bool = False, lazy: bool = True
) -> set[str]:
    """Dotted package modules that ``source`` imports directly (parents included).

    ``here`` is the source's own dotted name (needed to resolve relative imports; None for a
    script outside the package); ``is_package``: the source is an ``__init__.py``; ``lazy``:
    count imports inside functions too (they run when the function does).
    """
    found: set[str] = set()
    for node in _import_nodes(ast.parse(source), lazy):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
            from_names: list[str] = []
        else:
            if node.level:
                if here is None:
                    raise ValueError("a relative import outside the package cannot be resolved")
                base = here.split(".") if is_package else here.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target]
            from_names = [alias.name for alias in node.names]
        for target in targets:
            if target.split(".")[0] != PACKAGE:
                continue
            found.update(_with_parents(target))
            for name in from_names:  # `from pkg import module` imports that module too
                if module_file(f"{target}.{name}") is not None:
                    found.add(f"{target}.{name}")
    return {m for m in found if module_file(m) is not None}


@cache
def _direct(path: Path, lazy: bool) -> frozenset[str]:
    is_package = path.name == "__init__.py"
    return frozenset(imported_modules(path.read_text(), module_name(path), is_package, lazy))


def closure(modules: set[str], lazy: bool = True) -> set[str]:
    """``modules`` and everything they import inside the package, transitively."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_file(module)
        if path is not None:
            todo.extend(_direct(path, lazy) - seen)
    return seen


def script_closure(script: str | Path, lazy: bool = True) -> set[str]:
    """Package modules a rule script (workflow/scripts/<rule>.py) runs, transitively; with
    ``lazy=False`` only those that loading the script imports (no function bodies)."""
    return closure(imported_modules(Path(script).read_text(), lazy=lazy), lazy)


def files_of(modules: set[str]) -> list[Path]:
    """The files of ``modules``, sorted (a stable input list: reruns compare its contents)."""
    paths = (module_file(m) for m in modules)
    return sorted(p for p in paths if p is not None)
