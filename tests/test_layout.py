"""The server's shape: no import cycle among its modules, no class over about 200 lines.

Read from the source with ast, nothing imported: an import inside a function counts too
(it is a dependency all the same, only a later one).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "randstream"
MAX_CLASS_LINES = 200


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module `name` imports, anywhere in its code."""
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            # `from x import y`: y may be a module of its own, or a name in x.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name, say
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    files = module_files(root, package)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # module -> "open" while on the path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def long_classes(root: Path = ROOT, package: str = PACKAGE,
                 limit: int = MAX_CLASS_LINES) -> list[str]:
    found = []
    for name, path in module_files(root, package).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{name}.{node.name}: {length} lines")
    return found


def test_the_cycle_finder_finds_one_and_only_one_that_is_there(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("import os\n\ndef later():\n    from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub"] == {"pkg.sub.c"}
    assert find_cycle(graph) is None
    (pkg / "sub" / "c.py").write_text("from ..a import thing\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]


def test_no_import_cycle_among_the_servers_modules():
    graph = import_graph()
    assert "randstream.stack" in graph and graph["randstream.stream"], "the graph was read"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_long_class_check_sees_a_long_class(tmp_path):
    (tmp_path / "pkg").mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_CLASS_LINES))
    (tmp_path / "pkg" / "m.py").write_text(f"class Short:\n    pass\n\n\nclass Long:\n{body}")
    assert long_classes(tmp_path, "pkg") == [f"pkg.m.Long: {MAX_CLASS_LINES + 1} lines"]


def test_no_class_in_the_server_is_longer_than_about_200_lines():
    assert long_classes() == []


# The WebSocket protocol is sans-I/O: fed bytes, it returns messages and bytes, and nothing
# it imports could do I/O or tie it to a library (issue 18).
IO_OR_LIBRARY = ("socket", "ssl", "select", "selectors", "asyncio", "engineio", "socketio",
                 "flask_socketio", "eventlet", "gevent", "greenlet", "time", "threading")


def top_level_imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it, by its top-level name (relative: '.')."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." if node.level else (node.module or "").split(".")[0])
    return found


def test_the_import_check_sees_what_a_file_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import enum\n\ndef later():\n    import socket\n    from . import x\n")
    assert top_level_imports(probe) == {"enum", "socket", "."}


def test_the_websocket_protocol_imports_no_io_and_no_library():
    imported = top_level_imports(ROOT / PACKAGE / "transport" / "protocol.py")
    assert imported <= {"__future__", "enum", "logging"}, imported
    assert not imported & set(IO_OR_LIBRARY)


def test_the_module_that_patches_imports_nothing_gevent_must_patch_first():
    """random_stream.py imports randstream.server to monkey-patch before anything else: if
    that import pulls in ssl (engine.io's does), gevent warns on every start and patches
    late (failed when server.py's arrivals imported admission, and so engine.io)."""
    import subprocess
    import sys

    probe = "import sys, randstream.server; print(sorted({'ssl', 'engineio', 'flask'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    assert out == "[]"
