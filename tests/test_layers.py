"""The package's layer order (docs/architecture.md): every import of every module, function-level
imports included, goes to its own package or a layer below, and no import closes a cycle."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "detr_irpe"


def layer_order() -> dict[str, int]:
    """Package -> layer index, read from the ``layers`` block of docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S).group(1)
    return {name: i for i, line in enumerate(block.splitlines()) for name in line.split()}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The package modules that module ``name`` imports, anywhere in its body."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import submodule`` depends on the submodule, not on the package's __init__
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES]
            targets = subs if len(subs) == len(node.names) else [module, *subs]
        else:
            continue
        for target in targets:
            while target and target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != name:
                found.add(target)
    return found


def layer_of(name: str, order: dict[str, int]) -> int:
    parts = name.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return order["api"]
    assert parts[1] in order, f"{name}: package {parts[1]!r} has no layer in docs/architecture.md"
    return order[parts[1]]


def test_every_package_has_a_layer():
    order = layer_order()
    for name in MODULES:
        layer_of(name, order)


def test_no_import_goes_up_the_layer_order():
    order = layer_order()
    upward = []
    for name in sorted(MODULES):
        for target in sorted(imports_of(name)):
            own, other = name.split(".")[:2], target.split(".")[:2]
            if own != other and layer_of(target, order) >= layer_of(name, order):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports that go up the layer order or across peers:\n" + "\n".join(upward)


def test_no_import_closes_a_cycle():
    graph = {name: imports_of(name) for name in MODULES}
    # Tarjan's strongly connected components: a component of more than one module is a cycle
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_function_level_imports():
    # commands import their work inside main() so that --help stays fast: those imports count
    assert "detr_irpe.engine.trainer" in imports_of("detr_irpe.commands.train")
