"""The package's shape, checked: layers point one way, modes and runtimes are plug-ins, one home per concept.

Every import counts, including those inside functions (they are read from the source, not from what happens to be
imported): a lower layer never imports a higher one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

# Lower numbers are lower layers: a module may import its own layer and any lower one, never a higher one.
#   foundation (cell, record, scenario, errors, atomic, env, outlock) <- analyze (pure functions) <- measure and
#   machine (they measure), report (renders analyze's results) <- modes, kernels (a mode's job and its report hooks,
#   a kernel benchmark) <- plugin <- cli
LAYERS = {"foundation": 0, "analyze": 1, "measure": 2, "machine": 2, "report": 2, "modes": 3, "kernels": 3,
          "plugin": 4, "cli": 5}
# Peers that must not know each other: report reads analyze's results only, it never measures.
FORBIDDEN_PEERS = {("report", "measure"), ("report", "machine"), ("measure", "report"), ("machine", "report"),
                   ("modes", "kernels"), ("kernels", "modes")}


def layer(module: str) -> str:
    parts = module.split(".")
    sub = parts[2] if len(parts) > 2 else ""
    return sub if sub in LAYERS else "foundation"


def modules() -> dict[str, Path]:
    out = {}
    for p in BENCH.rglob("*.py"):
        rel = p.relative_to(BENCH).with_suffix("")
        parts = ["archbench", "bench", *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, at any depth, relative ones resolved."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".")[: -node.level] if path.name != "__init__.py" else module.split(".")[
                    : len(module.split(".")) - node.level + 1]
                base = ".".join([*pkg, base]) if base else ".".join(pkg)
            out += [(node.lineno, f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base) for a in node.names]
    return out


MODULES = modules()


def violations() -> list[str]:
    bad = []
    for mod, path in MODULES.items():
        here = layer(mod)
        for line, target in imports(path, mod):
            if not target.startswith("archbench.bench"):
                continue
            there = layer(target)
            if LAYERS[there] > LAYERS[here] or (here, there) in FORBIDDEN_PEERS:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {there} ({target})")
    return bad


def test_layers_point_one_way() -> None:
    bad = violations()
    assert not bad, f"{len(bad)} imports point up a layer:\n" + "\n".join(bad)


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    src = "def f():\n    from archbench.bench.cli.main import main\n    return main\n"
    (tmp_path / "m.py").write_text(src)
    assert [t for _, t in imports(tmp_path / "m.py", "archbench.bench.analyze.m")] == ["archbench.bench.cli.main"]
    assert layer("archbench.bench.analyze.m") == "analyze" and LAYERS["cli"] > LAYERS["analyze"]


def _registry(path: Path, name: str) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"no {name} in {path}")


# Where a plug-in's name may be compared besides its own folder: a mode's analysis, rendering and flags live in
# analyze/, report/ and cli/ beside the others (so reports read them without measuring); record.py's migrations
# describe what old versions of a runtime wrote.
HOMES = {
    "generate": {"analyze/generation.py", "report/generate.py", "cli/genopts.py", "measure/decode.py"},
    "train": {"report/train.py", "cli/trainopts.py", "measure/train_step.py"},
    "maxbatch-trial": {"report/train.py", "cli/trainopts.py", "measure/train_step.py"},
    "onnxruntime": {"record.py"},
}


@pytest.mark.parametrize("registry, folder", [
    ("RUNTIMES", BENCH / "measure" / "runtimes"),
    ("MODES", BENCH / "modes"),
])
def test_plugins_are_one_file_each_named_only_in_their_registry(registry: str, folder: Path) -> None:
    """A runtime or a mode is one file plus one registry line: no other module spells its name in a comparison."""
    reg = _registry(folder / "__init__.py", registry)
    for ref in reg.values():
        mod = ref.partition(":")[0]
        assert (ROOT / "bench" / Path(*mod.split(".")[2:])).with_suffix(".py").exists(), ref
    names = [n for n in reg if n not in ("torch", "infer")]  # words too common to grep for
    bad = []
    for path in MODULES.values():
        if path.is_relative_to(folder):
            continue
        rel = str(path.relative_to(BENCH))
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for name in names:
                q = re.escape(name)
                if re.search(rf"""(==|!=|\bin\b)\s*\(?\s*["']{q}["']|["']{q}["']\s*(==|!=)""", line.split("#")[0]) \
                        and rel not in HOMES.get(name, ()):
                    bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, f"{registry} names special-cased outside their files:\n" + "\n".join(bad)


@pytest.mark.parametrize("name, kind", [
    ("RunSpec", "class"), ("t_quantile", "def"), ("t_ppf", "def"), ("slug", "def"), ("cell_label", "def"),
    ("knobs_text", "def"), ("_fmt", "def"), ("fingerprint", "def"), ("num", "def"), ("environment", "def"),
    ("_prepare", "def"), ("measure", "def"), ("bracket_search", "def"),
    ("find_max_batch", "def"),
])
def test_one_home_per_concept(name: str, kind: str) -> None:
    homes = [f"{p.relative_to(ROOT)}" for p in MODULES.values()
             if re.search(rf"^\s*{kind} {re.escape(name)}\b", p.read_text(), flags=re.MULTILINE)]
    assert len(homes) <= 1, f"{kind} {name} is defined in {len(homes)} places: {homes}"


def test_knobs_are_shown_one_way() -> None:
    """Every label shows knobs through cell.knobs_text: nobody strips the JSON quotes by hand."""
    idiom = re.compile(r"""\.replace\('"', ""\)""")
    bad = [str(p.relative_to(ROOT)) for p in MODULES.values() if p.name != "cell.py" and idiom.search(p.read_text())]
    assert not bad, bad
