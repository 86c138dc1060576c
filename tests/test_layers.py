"""The house's layers (ARCHITECTURE.md): no import runs upwards, and evaluating or exporting never
loads training code.

Every import of every module is read from its source (top-level and inside functions), so a lazy
import cannot hide a dependency. Layers, bottom to top; a module may import its own package and any
lower layer, never another package of its own layer nor a higher one (the base modules of layer 0,
and the command line of the top layer, use each other).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import simtool

ROOT = Path(simtool.__file__).parent

# bottom to top; a package is named by its dotted prefix (the longest matching prefix wins)
LAYERS = [
    ["simtool", "simtool.errors", "simtool.io", "simtool.registry", "simtool.rng", "simtool.signals"],
    ["simtool.specs"],
    ["simtool.formats"],
    ["simtool.data", "simtool.metrics"],
    ["simtool.models", "simtool.losses"],
    ["simtool.engine"],
    ["simtool.methods", "simtool.evaluators", "simtool.embedding", "simtool.data.builders"],
    ["simtool.compare"],
    ["simtool.stages"],
    ["simtool.cli", "simtool.__main__"],
]
PACKAGES = {pkg: level for level, pkgs in enumerate(LAYERS) for pkg in pkgs}


def package_of(module: str) -> str:
    best = "simtool"
    for pkg in PACKAGES:
        if (module == pkg or module.startswith(pkg + ".")) and len(pkg) > len(best):
            best = pkg
    return best


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Every simtool module ``name`` imports (absolute and relative, anywhere in the file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # from pkg import module
    mods = modules()
    return {m for m in found if m.startswith("simtool") and m in mods}


def test_the_layers_cover_every_module():
    assert all(package_of(m) in PACKAGES for m in modules())


def violations(name: str, deps) -> list[str]:
    """The imports of module ``name`` that run upwards or sideways."""
    out = []
    mine = package_of(name)
    for dep in deps:
        theirs = package_of(dep)
        if theirs == mine or theirs == "simtool" or (PACKAGES[theirs] == PACKAGES[mine] in (0, len(LAYERS) - 1)):
            continue  # the base modules use each other, as do the command line's
        if PACKAGES[theirs] > PACKAGES[mine] or (PACKAGES[theirs] == PACKAGES[mine] and not theirs.startswith(mine) and not mine.startswith(theirs)):
            out.append(f"{name} ({mine}, layer {PACKAGES[mine]}) imports {dep} ({theirs}, layer {PACKAGES[theirs]})")
    return out


def test_the_rule_catches_upward_and_sideways_imports():
    assert violations("simtool.formats.embeddings", ["simtool.data.rooms"]), "formats -> data runs upwards"
    assert violations("simtool.specs.train", ["simtool.methods"]), "specs -> methods runs upwards"
    assert violations("simtool.methods.direct", ["simtool.evaluators.triplets"]), "methods -> evaluators runs sideways"
    assert violations("simtool.stages.evaluate", ["simtool.cli.main"])
    assert not violations("simtool.stages.evaluate", ["simtool.embedding.runs", "simtool.formats.results", "simtool.errors"])
    assert not violations("simtool.data.builders.toyworld", ["simtool.data.toyworld", "simtool.formats.dataset_dir"])


def test_no_import_runs_upwards_or_sideways():
    problems = [p for name, path in modules().items() for p in violations(name, imports_of(name, path))]
    assert not problems, "\n".join(problems)


def test_a_registry_member_never_imports_its_package_face():
    """Members import ``<family>._registry``, not the family's ``__init__`` (no import cycles)."""
    faces = {"simtool.methods", "simtool.evaluators", "simtool.models", "simtool.losses", "simtool.data.builders", "simtool.formats.dataset_dir"}
    problems = []
    for name, path in modules().items():
        for face in faces:
            if name.startswith(face + ".") and name.count(".") == face.count(".") + 1:
                tree = ast.parse(path.read_text(encoding="utf-8"))
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and node.module == face:
                        problems.append(f"{name} imports from {face}")
    assert not problems, "\n".join(problems)


EVAL_SCRIPT = textwrap.dedent(
    """
    import sys
    from typer.testing import CliRunner
    from simtool.cli.main import app

    runner = CliRunner()
    for args in {commands!r}:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    loaded = sorted(m for m in sys.modules if m.startswith(("simtool.methods", "simtool.engine.loop", "simtool.stages.train")))
    print("LOADED", loaded)
    evaluators = sorted(m for m in sys.modules if m.startswith("simtool.evaluators."))
    print("EVALUATORS", evaluators)
    """
)


def test_evaluating_every_kind_of_target_and_exporting_load_no_training_code(tmp_path, tiny_world, tiny_run):
    """save-embeddings; evaluate a run, an embeddings file and plain arrays with each registered
    evaluator that reads them: one process, then no training module is loaded."""
    from simtool.evaluators import EVALUATORS

    emb = tmp_path / "emb.safetensors"
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(12, 4)).astype(np.float32))
    (tmp_path / "labels.csv").write_text("context,category,object,class\n" + "".join(f"{i % 2},{i % 4},{i % 6},{i % 3}\n" for i in range(12)))
    (tmp_path / "trip.csv").write_text("a,b,c,kind\n0,1,2,directed\n3,4,5,odd-one-out\n")
    commands = [
        ["save-embeddings", str(tiny_run), "--out", str(emb), "--device", "cpu"],
        ["evaluate", str(tiny_run), "--type", "odd-one-out", "--repeats", "1", "--device", "cpu", "--out", str(tmp_path / "a.json")],
        ["evaluate", str(emb), "--type", "odd-one-out", "--repeats", "1", "--out", str(tmp_path / "b.json")],
        ["evaluate", str(emb), "--type", "classes", "--set", "column=category", "--set", "clustering=false",
         "--device", "cpu", "--out", str(tmp_path / "c.json")],
        ["evaluate", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "labels.csv"), "--type", "classes", "--out", str(tmp_path / "d.json")],
        ["evaluate", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "trip.csv"), "--type", "triplets", "--out", str(tmp_path / "e.json")],
    ]
    proc = subprocess.run([sys.executable, "-c", EVAL_SCRIPT.format(commands=commands)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout, proc.stdout
    types = {c[c.index("--type") + 1] for c in commands if "--type" in c}
    assert types <= set(EVALUATORS.names())


@pytest.mark.parametrize("face", ["simtool.engine", "simtool.formats", "simtool.evaluators", "simtool.formats.dataset_dir"])
def test_faces_are_light(face):
    """Importing a family's face loads neither the training loop nor any method."""
    code = f"import sys, {face}; print(sorted(m for m in sys.modules if m.startswith(('simtool.methods', 'simtool.engine.loop'))))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
