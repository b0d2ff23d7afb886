"""Import cycles among the project's modules, found by reading the source (nothing is imported).

``python -m scripts.import_cycles`` (run by ``make lint``) exits 1 and prints every cycle. Every kind
of import counts: module level, inside ``if TYPE_CHECKING:``, inside functions (a lazy import that
dodges a cycle still couples the two modules both ways), and the implicit import of each parent
package's ``__init__`` (``import a.b.c`` runs ``a/b/__init__.py`` first). ``--sizes`` also lists the
largest modules by lines.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Source directory -> the top-level package it is imported as (pyproject's package-dir, plus the
# repository-root packages run with ``python -m``).
PACKAGES = {"services/gateway": "gateway", "services/worker": "worker", "services/emulator": "emulator",
            "shared": "shared", "bench": "bench", "scripts": "scripts", "tests": "tests"}


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line``; ``kind`` is top, typing, lazy or package."""

    source: str
    target: str
    kind: str
    line: int


def find_modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the project's packages."""
    out: dict[str, Path] = {}
    for rel, pkg in PACKAGES.items():
        base = root / rel
        for f in sorted(base.rglob("*.py")):
            parts = list(f.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = f
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: dict[str, Path]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.modules = modules
        self.kind = "top"
        self.edges: list[Edge] = []

    def _resolve(self, name: str) -> str | None:
        while name:
            if name in self.modules:
                return name
            name = name.rpartition(".")[0]
        return None

    def _add(self, name: str, line: int) -> None:
        target = self._resolve(name)
        if target is None or target == self.module:
            return
        self.edges.append(Edge(self.module, target, self.kind, line))
        parent = target.rpartition(".")[0]
        while parent:
            if parent in self.modules and parent != self.module and not self.module.startswith(parent + "."):
                self.edges.append(Edge(self.module, parent, "package", line))
            parent = parent.rpartition(".")[0]

    def _nested(self, node: ast.AST, kind: str) -> None:
        saved, self.kind = self.kind, kind
        self.generic_visit(node)
        self.kind = saved

    def visit_If(self, node: ast.If) -> None:  # ast.NodeVisitor names these methods by node type
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        saved, self.kind = self.kind, "typing"
        for stmt in node.body:
            self.visit(stmt)
        self.kind = saved
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._nested(node, "lazy" if self.kind == "top" else self.kind)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._nested(node, "lazy" if self.kind == "top" else self.kind)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            self._add(sub if sub in self.modules else source, node.lineno)


def find_edges(modules: dict[str, Path]) -> list[Edge]:
    """Every import edge between project modules."""
    edges: list[Edge] = []
    for name, path in modules.items():
        collector = _Collector(name, path.name == "__init__.py", modules)
        collector.visit(ast.parse(path.read_text(), str(path)))
        edges.extend(collector.edges)
    return edges


def find_cycles(modules: list[str], edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative), each sorted."""
    graph: dict[str, list[str]] = {m: [] for m in modules}
    for e in edges:
        graph[e.source].append(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            succ = graph[node]
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def main(argv: list[str] | None = None) -> int:
    """Print the cycles (and with --sizes the largest modules); 1 when there is a cycle."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", action="store_true", help="also list the 15 largest modules by lines")
    args = parser.parse_args(argv)
    modules = find_modules(ROOT)
    edges = find_edges(modules)
    cycles = find_cycles(list(modules), edges)
    for comp in cycles:
        members = set(comp)
        print(f"import cycle among {len(comp)} modules: {', '.join(comp)}")
        for e in sorted({(e.source, e.target, e.kind): e for e in edges
                         if e.source in members and e.target in members}.values(),
                        key=lambda e: (e.source, e.line)):
            print(f"    {modules[e.source].relative_to(ROOT)}:{e.line}  {e.source} -> {e.target} ({e.kind})")
    if args.sizes:
        sizes = sorted(((len(p.read_text().splitlines()), m) for m, p in modules.items()), reverse=True)
        print("largest modules (lines):")
        for n, m in sizes[:15]:
            print(f"  {n:5d}  {m}")
    if cycles:
        return 1
    print(f"no import cycles among {len(modules)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
