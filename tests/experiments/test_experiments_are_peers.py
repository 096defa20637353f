"""Experiments are peers: no experiment package imports another. What two experiments share
lives in the library beside them (lab/, load/, analysis/, reporting.py, ladder.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import experiments

ROOT = Path(experiments.__file__).parent
PACKAGES = sorted(p for p in ROOT.glob("exp*_*") if (p / "__init__.py").exists())


def imported_modules(path: Path, package: str) -> list[str]:
    """Every module `path` imports, relative imports resolved against its package."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            # `from experiments import exp4_ladder` names the package in the alias
            out += [module] + [f"{module}.{a.name}" for a in node.names]
    return out


def experiment_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) > 1 and parts[0] == "experiments" and (ROOT / parts[1]) in PACKAGES:
        return parts[1]
    return None


def test_the_walk_sees_every_experiment_and_resolves_imports(tmp_path):
    assert len(PACKAGES) >= 6
    sample = tmp_path / "m.py"
    sample.write_text("from experiments import exp4_ladder\nfrom ..exp5_builds import run\n"
                      "import experiments.exp6_crossover.report\n")
    found = {experiment_of(m) for m in imported_modules(sample, "experiments.exp1_profiling")}
    assert {"exp4_ladder", "exp5_builds", "exp6_crossover"} <= found


def test_no_experiment_imports_another():
    crossings = []
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            for module in imported_modules(path, f"experiments.{package.name}"):
                other = experiment_of(module)
                if other is not None and other != package.name:
                    crossings.append(f"{path.relative_to(ROOT.parent)} imports {module}")
    assert not crossings, ("an experiment imports another; move what they share into the "
                           "library:\n" + "\n".join(sorted(set(crossings))))
