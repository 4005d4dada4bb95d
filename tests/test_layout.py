"""The package's boundaries hold: no import circle anywhere, and torch's world stays inside ``trainingd/train/``.

The static import graph of every module under ``trainingd/`` is read with ``ast`` (imports at the top of a module,
inside functions and under ``if``/``try`` alike, and ``importlib.import_module("...")`` with a string target), so a
function-level import cannot hide a circle or a torch import from the daemon's side.

    .venv/bin/python -m pytest -q tests/test_layout.py
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "trainingd"
TRAINER_PACKAGE = "trainingd.train"
TRAINER_ONLY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "accelerate", TRAINER_PACKAGE)


def module_name(path: Path, root: Path = REPO) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def _absolute(module: str, is_package: bool, target: str | None, level: int) -> str:
    if not level:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - level + 1]
    return ".".join(base + ([target] if target else []))


def _is_main_block(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators))


def imports_of(path: Path, modules: set[str], root: Path = REPO, *, main_block: bool = True) -> list[tuple[str, int]]:
    """Every import in ``path`` as (absolute module name, line), trainingd's own resolved to the module imported.

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``. ``main_block=False``
    leaves out the script's own block (``if __name__ == "__main__":``): it runs only when the module is __main__,
    never while it is imported, so its imports cannot close a circle (they still count for what a process loads).
    """
    module = module_name(path, root)
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if not main_block:
        tree.body = [n for n in tree.body if not _is_main_block(n)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.module, node.level)
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub if sub in modules else base, node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "importlib" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))
    return found


def package_graph(package: Path = PACKAGE, root: Path = REPO) -> tuple[dict[str, set[str]], dict[str, list]]:
    """(module -> the package's modules it imports, module -> every import with its line)."""
    paths = {module_name(p, root): p for p in sorted(package.rglob("*.py"))}
    names = set(paths)
    every = {m: imports_of(p, names, root) for m, p in paths.items()}
    graph = {m: {i for i, _ in imports_of(p, names, root, main_block=False) if i in names and i != m}
             for m, p in paths.items()}
    return graph, every


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def trainer_only_imports(every: dict[str, list]) -> list[str]:
    """``module:line imports X`` for each import of the trainer's libraries outside ``trainingd.train``."""
    bad = []
    for module, found in sorted(every.items()):
        if module == TRAINER_PACKAGE or module.startswith(TRAINER_PACKAGE + "."):
            continue
        for target, line in found:
            if any(target == t or target.startswith(t + ".") for t in TRAINER_ONLY):
                bad.append(f"{module}:{line} imports {target}")
    return bad


def test_the_package_has_no_import_circle_at_module_or_function_level():
    graph, _ = package_graph()
    assert len(graph) > 60, "the walk found the package's modules"
    found = circles(graph)
    assert not found, "import circles (break each by moving the shared piece down):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_nothing_outside_the_trainer_package_imports_torch_or_the_trainer():
    _, every = package_graph()
    bad = trainer_only_imports(every)
    assert not bad, "only trainingd/train/ may import these (the daemon side stays stdlib):\n" + "\n".join(bad)


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A throwaway package laid out like trainingd, to show the checks catch what they name."""
    pkg = tmp_path / "trainingd"
    for sub in ("", "daemon", "train"):
        (pkg / sub).mkdir(exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "config.py").write_text("def f():\n    from trainingd.daemon import autogen\n\n\n"
                                   "if __name__ == '__main__':\n    from trainingd.train import model\n")
    (pkg / "daemon" / "autogen.py").write_text("from trainingd.config import f\n")
    (pkg / "daemon" / "loop.py").write_text(
        "import importlib\n\ndef g():\n    importlib.import_module('trainingd.train.model')\n")
    (pkg / "daemon" / "status.py").write_text("from .. import config\n\ndef h():\n    import torch.nn\n")
    (pkg / "train" / "model.py").write_text("import torch\nfrom trainingd.daemon import loop\n")
    return pkg


def test_a_function_level_circle_and_a_hidden_torch_import_are_caught(toy: Path):
    graph, every = package_graph(toy, toy.parent)
    assert circles(graph) == [["trainingd.config", "trainingd.daemon.autogen"],
                              ["trainingd.daemon.loop", "trainingd.train.model"]]
    assert "trainingd.config" in graph["trainingd.daemon.status"], "a relative import resolves"
    assert trainer_only_imports(every) == ["trainingd.config:6 imports trainingd.train.model",
                                           "trainingd.daemon.loop:4 imports trainingd.train.model",
                                           "trainingd.daemon.status:4 imports torch.nn"]
