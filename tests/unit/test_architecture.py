"""Standing architecture rules for ``src/flowkit``, checked statically with ``ast``.

* no module over 500 lines (the store's migrations excepted);
* no function or method over 60 lines in ``runtime/`` and ``store/``, counted from its
  ``def`` line to its last line (decorators excluded, nested functions counted too);
* ``runtime/`` and ``store/`` never import ``flowkit.app``, not even for type checking;
* store modules import no ``_private`` name from each other, and read no module's
  ``_private`` attributes;
* no imports inside functions in ``runtime/`` and ``store/``, except the lazy imports
  of optional or slow third-party packages in :data:`LAZY_IMPORTS`;
* every public error class is defined in ``flowkit/errors.py``.

Nothing here imports flowkit: every rule reads the source, so the checks are fast
and hold whatever a module does at import. Each failure lists every offender.
See docs/architecture.md for why the rules exist.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "flowkit"
MIGRATIONS = PACKAGE / "store" / "migrations"

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

#: The only imports runtime/ and store/ may make inside a function: optional or slow
#: third-party packages, imported on first use so that importing flowkit stays cheap
#: (tests/unit/test_public_api.py checks that ``import flowkit`` loads no pika).
#: A key allows that module and its submodules.
LAZY_IMPORTS = {
    "pika": "the RabbitMQ client: only a worker or a publisher on amqp:// needs it",
    "dramatiq.brokers.rabbitmq": "Dramatiq's RabbitMQ broker, which imports pika",
    "alembic": "migrations: imported only when the schema must change (~120 ms)",
    "openai": "the llm extra, optional",
    "prometheus_client": "the metrics extra, optional",
    "pendulum": "cron schedules only (periodiq's time zones), slow to import",
}


# -- reading the tree -----------------------------------------------------------------
def _modules(*under: str) -> list[Path]:
    """The package's modules (under ``under`` when given), migrations excluded."""
    roots = [PACKAGE / u for u in under] if under else [PACKAGE]
    return sorted(
        p
        for root in roots
        for p in root.rglob("*.py")
        if MIGRATIONS not in p.parents and "__pycache__" not in p.parts
    )


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _where(path: Path, line: int | None = None) -> str:
    rel = path.relative_to(SRC.parent).as_posix()
    return rel if line is None else f"{rel}:{line}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` reads from."""
    if node.level == 0:
        return node.module or ""
    base = _package_of(path).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_flowkit_module(name: str) -> bool:
    """Whether ``name`` (``flowkit.store.gates``) is a module or package of the source."""
    target = SRC.joinpath(*name.split("."))
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def _report(rule: str, offenders: list[str]) -> str:
    return f"{rule} ({len(offenders)}):\n  " + "\n  ".join(offenders)


# -- (a) module size ----------------------------------------------------------------------
def test_no_module_is_over_500_lines() -> None:
    offenders = [
        f"{_where(p)}: {n} lines"
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not offenders, _report(
        f"modules over {MAX_MODULE_LINES} lines: split them into modules with one job each",
        offenders,
    )


# -- (b) function size in runtime/ and store/ ----------------------------------------------
def test_no_runtime_or_store_function_is_over_60_lines() -> None:
    offenders = []
    for path in _modules("runtime", "store"):
        for fn in _functions(_tree(path)):
            length = (fn.end_lineno or fn.lineno) - fn.lineno + 1  # from `def`, no decorators
            if length > MAX_FUNCTION_LINES:
                offenders.append(f"{_where(path, fn.lineno)} {fn.name}(): {length} lines")
    assert not offenders, _report(
        f"functions in runtime/ and store/ over {MAX_FUNCTION_LINES} lines", offenders
    )


# -- (c) runtime/ and store/ do not know the App ---------------------------------------------
def _app_imports(path: Path) -> Iterator[str]:
    tree = _tree(path)
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            module = _resolve(path, node)
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        if any(n == "flowkit.app" or n.startswith("flowkit.app.") for n in names):
            yield f"{_where(path, node.lineno)}: {ast.unparse(node)}"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "app"
            and isinstance(node.value, ast.Name)
            and node.value.id == "flowkit"
        ):
            yield f"{_where(path, node.lineno)}: {ast.unparse(node)}"


def test_runtime_and_store_never_import_the_app() -> None:
    offenders = [o for path in _modules("runtime", "store") for o in _app_imports(path)]
    assert not offenders, _report(
        "runtime/ and store/ modules importing flowkit.app (TYPE_CHECKING included): "
        "pass them the parts they need instead",
        offenders,
    )


# -- (d) store modules keep each other's privates private ---------------------------------
def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_aliases(path: Path) -> set[str]:
    """Local names bound to a module by an import in ``path``."""
    bound: set[str] = set()
    for node in _imports(_tree(path)):
        if isinstance(node, ast.Import):
            bound.update(a.asname or a.name.split(".")[0] for a in node.names)
            continue
        module = _resolve(path, node)
        for a in node.names:
            if _is_flowkit_module(f"{module}.{a.name}"):
                bound.add(a.asname or a.name)
    return bound


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _store_privates(path: Path) -> Iterator[str]:
    tree = _tree(path)
    for node in _imports(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = _resolve(path, node)
        if module != "flowkit.store" and not module.startswith("flowkit.store."):
            continue
        for a in node.names:
            if _private(a.name) and not _is_flowkit_module(f"{module}.{a.name}"):
                yield f"{_where(path, node.lineno)}: {ast.unparse(node)} ({module}.{a.name})"
    modules = _module_aliases(path)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and _root_name(node.value) in modules
        ):
            yield f"{_where(path, node.lineno)}: {ast.unparse(node)}"


def test_store_modules_use_no_private_names_of_other_modules() -> None:
    offenders = [o for path in _modules("store") for o in _store_privates(path)]
    assert not offenders, _report(
        "store modules importing another store module's _private names, or reading a "
        "module's _private attributes: make them public, or move them where they are used",
        offenders,
    )


# -- (e) no function-level imports in runtime/ and store/ -----------------------------------
def _allowed_lazily(module: str) -> bool:
    return any(module == k or module.startswith(k + ".") for k in LAZY_IMPORTS)


def _lazy_imports(path: Path) -> Iterator[str]:
    for fn in _functions(_tree(path)):
        for node in _imports(fn):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:  # a relative import is always of flowkit, never allowed
                modules = ["flowkit" if node.level else node.module or ""]
            if not all(_allowed_lazily(m) for m in modules):
                yield f"{_where(path, node.lineno)} in {fn.name}(): {ast.unparse(node)}"


def test_runtime_and_store_import_at_module_level() -> None:
    offenders = [o for path in _modules("runtime", "store") for o in _lazy_imports(path)]
    assert not offenders, _report(
        "imports inside functions in runtime/ and store/ (only "
        f"{', '.join(LAZY_IMPORTS)} may be imported lazily; flowkit modules never)",
        offenders,
    )


# -- one error tree -------------------------------------------------------------------------
def _error_classes(path: Path) -> Iterator[str]:
    errors_all = _errors_all()
    for node in ast.walk(_tree(path)):
        if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
            continue  # a private subclass (runtime's _Timeout) is an implementation detail
        bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
        bases |= {b.attr for b in node.bases if isinstance(b, ast.Attribute)}
        if node.name.endswith("Error") or bases & errors_all:
            yield f"{_where(path, node.lineno)}: class {node.name}"


@functools.cache
def _errors_all() -> frozenset[str]:
    for node in _tree(PACKAGE / "errors.py").body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return frozenset(ast.literal_eval(node.value))
    raise AssertionError("flowkit/errors.py has no __all__")


def test_public_errors_are_defined_in_errors_py() -> None:
    offenders = [
        o for path in _modules() if path != PACKAGE / "errors.py" for o in _error_classes(path)
    ]
    assert not offenders, _report(
        "error classes outside flowkit/errors.py: define them there, under FlowkitError, "
        "and import them where they were",
        offenders,
    )
