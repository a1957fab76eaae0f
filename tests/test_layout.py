"""The layering rules of the code, checked on the import statements of every module (docs/architecture.md)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported(path: Path) -> set[str]:
    """Every absolute module named by an import statement in ``path`` (top-level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def hits(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in forbidden))


def offenders(files, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {str(f.relative_to(ROOT)): hits(imported(f), forbidden) for f in files}
    return {f: h for f, h in found.items() if h}


def test_the_learning_core_imports_neither_sim_nor_hw():
    assert offenders(sorted((ROOT / "robot_rl").rglob("*.py")), ("sim", "hw")) == {}


def test_runtimes_use_the_loop_and_the_loop_knows_no_runtime():
    assert offenders(sorted((ROOT / "robot_rl/runtime").rglob("*.py")), ("robot_rl.cli",)) == {}
    assert offenders([ROOT / "robot_rl/collect.py"], ("robot_rl.runtime", "robot_rl.trainer", "robot_rl.cli")) == {}


def test_the_checker_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\n\n\ndef g():\n    from hw.ros_env import RosEnv\n    import hwx\n")
    assert imported(f) == {"os", "hw.ros_env", "hwx"}
    assert hits(imported(f), ("hw",)) == ["hw.ros_env"]
