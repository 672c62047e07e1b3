"""The docs: the README is a short front door, docs/ builds as a site with `mkdocs build --strict`, the reference
pages are what the code says, no link leaves the repository, every command has a how-to example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)[^)]*\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; the rest belongs in docs/"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_link_leaves_the_repository_and_every_link_resolves(page: Path) -> None:
    text = page.read_text()
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("//"):
            bad.append(f"external link {target}")
            continue
        path = target.split("#")[0]
        if path and not (page.parent / path).exists():
            bad.append(f"broken link {target}")
    bad += [f"external link {u}" for u in re.findall(r"<(https?://[^>]+)>", text)]
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


def test_reference_pages_are_generated_from_the_code() -> None:
    proc = subprocess.run([sys.executable, str(DOCS / "gen_reference.py"), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_every_command_has_a_how_to_example() -> None:
    from archbench.bench.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    guides = "\n".join(p.read_text() for p in (DOCS / "how-to").glob("*.md"))
    missing = [c for c in commands if not re.search(rf"^\$? ?archbench {re.escape(c)}\b", guides, flags=re.M)]
    assert not missing, f"no how-to example for: {', '.join(missing)}"


def test_mkdocs_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists()
