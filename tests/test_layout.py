"""The house rules of docs/ARCHITECTURE.md, checked over the source with the standard library's ``ast``.

- no import circle between p2pwatch modules, counting imports inside functions too (a function-local import
  must not be the way round a cycle);
- no module imports another module's private (``_``-prefixed) name;
- each module stays at or under 500 lines;
- at most ten modules at the package's top level besides ``__init__`` and ``__main__``;
- nothing in the repository points at a ``../shared`` folder a person who clones it does not have.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("p2pwatch", "evidence")
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    drop = node.level - (1 if is_package else 0)
    base = base[: len(base) - drop] if drop else base
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in ``module``, at any depth."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, None, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in MODULES:
                    found.append((submodule, None, node.lineno))
                else:
                    found.append((target, alias.name, node.lineno))
    return found


def _internal_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for module in MODULES:
        for target, _name, _line in imports_of(module):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return components


def test_cycle_finder_finds_a_planted_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = find_cycles(_internal_graph())
    assert cycles == [], f"import circles: {cycles}"


def test_no_private_names_across_modules() -> None:
    offences = []
    for module in MODULES:
        for target, name, line in imports_of(module):
            if name and name.startswith("_") and not name.startswith("__") and target != module:
                offences.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}.{name}")
            last = target.split(".")[-1]
            if last.startswith("_") and not last.startswith("__"):
                offences.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports private module {target}")
    assert offences == []


def test_tests_do_not_import_private_names() -> None:
    offences = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGES):
                offences += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                             for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert offences == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module: str) -> None:
    lines = MODULES[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{module} has {lines} lines"


def test_top_level_is_small() -> None:
    top = [p.name for p in (ROOT / "p2pwatch").glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= 10, sorted(top)


def test_no_pointer_to_a_shared_folder_outside_the_repository() -> None:
    suffixes = {".py", ".md", ".toml", ".sh", ".cfg", ".txt", ".service", ".html"}
    offenders = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in (".git", ".venv", "build", "node_modules") or rel.parts[0].endswith(".egg-info") \
                or not path.is_file():
            continue
        readable = path.suffix in suffixes or path.name == "run"
        if readable and path != Path(__file__) and "../shared" in path.read_text(encoding="utf-8", errors="replace"):
            offenders.append(str(rel))
    assert offenders == []


def test_no_merge_conflict_markers_are_committed() -> None:
    """A merge left ``<<<<<<< HEAD`` … ``>>>>>>> main`` in the README once; no text file may hold them."""
    suffixes = {".py", ".md", ".toml", ".sh", ".cfg", ".txt", ".service", ".html", ".po", ".ini", ".mako"}
    markers = ("<<<<<<< ", ">>>>>>> ")
    offenders = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in (".git", ".venv", "build", "node_modules") or rel.parts[0].endswith(".egg-info") \
                or not path.is_file() or (path.suffix not in suffixes and path.name != "run"):
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        offenders += [f"{rel}:{i}" for i, line in enumerate(lines, 1) if line.startswith(markers)]
    assert offenders == []
