"""The import contract of docs/DESIGN.md ("Layout"), checked on the source text.

Layers, each importing only from layers below it (and from itself):
  cli > daemon > app > reconcile, sync, cluster > temu, oc, store > root leaves.
The root leaves (config, logs, counters, retry, errors) import nothing else from engine,
except that errors may use logs' redactor (config is a package of two modules, one leaf).
`sim` stands apart: only `app` and `cli` import it, and it never imports temu or oc (it is
the other side of their wire).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "engine"

LEAVES = {"config", "logs", "counters", "retry", "errors", "__main__"}
RANK = {
    "leaf": 0,
    "temu": 1,
    "oc": 1,
    "store": 1,
    "reconcile": 2,
    "sync": 2,
    "cluster": 2,
    "app": 3,
    "daemon": 4,
    "cli": 5,
}
# Within the leaves: who may import whom.
LEAF_ALLOWED = {"errors": {"logs"}, "__main__": {"cli"}}


def _unit(module: str, root: Path = ENGINE) -> str:
    """engine.x.y -> x (a package) or 'leaf:x' for a root module."""
    parts = module.split(".")
    if len(parts) < 2:
        return "engine"
    head = parts[1]
    if head in LEAVES or (root / f"{head}.py").exists():
        return f"leaf:{head}"
    return head


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("engine")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "engine":
                found += [(node.lineno, f"engine.{a.name}") for a in node.names]
            elif node.module.startswith("engine."):
                found.append((node.lineno, node.module))
    return found


def _module_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def violations(root: Path = ENGINE) -> list[str]:
    bad: list[str] = []
    for path in sorted(root.rglob("*.py")):
        me = _unit(_module_of(path, root), root)
        for line, target in _imports(path):
            other = _unit(target, root)
            where = f"{path.relative_to(root.parent)}:{line} imports {target}"
            if other == me or other == "engine":
                continue
            if me == "sim" or other == "sim":
                if me == "sim" and other != "sim":
                    bad.append(f"{where}: sim imports nothing of the engine")
                elif other == "sim" and me not in ("app", "cli"):
                    bad.append(f"{where}: only app and cli may import sim")
                continue
            if me.startswith("leaf:"):
                name = me.split(":", 1)[1]
                target_leaf = other.split(":", 1)[1] if other.startswith("leaf:") else other
                if target_leaf not in LEAF_ALLOWED.get(name, set()):
                    bad.append(f"{where}: a root leaf imports nothing else from engine")
                continue
            mine = RANK[me]
            theirs = RANK["leaf"] if other.startswith("leaf:") else RANK.get(other)
            if theirs is None:
                bad.append(f"{where}: {other} is not in the layer map")
            elif theirs >= mine:
                bad.append(f"{where}: {me} (layer {mine}) may only import layers below it")
    return bad


def test_the_engine_keeps_its_layers() -> None:
    assert violations() == []


def test_every_package_is_in_the_layer_map() -> None:
    packages = {p.name for p in ENGINE.iterdir() if (p / "__init__.py").exists()}
    assert packages - set(RANK) - LEAVES - {"sim"} == set()


@pytest.mark.parametrize(
    ("module", "source", "needle"),
    [
        ("temu/bad.py", "from engine.sync.service import SyncService\n", "may only import"),
        ("sim/bad.py", "from engine.temu.api import TemuShopApi\n", "sim imports nothing"),
        ("store/bad.py", "import engine.sim.server\n", "only app and cli may import sim"),
        ("logs2.py", "from engine.config import Settings\n", "a root leaf imports nothing"),
    ],
)
def test_a_deliberate_violation_is_caught(
    tmp_path: Path, module: str, source: str, needle: str
) -> None:
    root = tmp_path / "engine"
    for pkg in ("temu", "sim", "store", "sync"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / module).write_text(source)
    found = violations(root)
    assert any(needle in v for v in found), found
