"""The user docs: docs/cli.md is click's own help, and every local link in README.md, docs/ and
leaderboards/README.md points at a file that exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "leaderboards" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_cli_reference_is_generated_from_click_help():
    # in a fresh process, as `python docs/gen_cli.py` runs: click caches each command's help option
    # on the command object, so a test that built a command's context outside the group (without
    # its -h alias) would change what this process renders
    code = f"import runpy, sys; sys.stdout.write(runpy.run_path({str(ROOT / 'docs' / 'gen_cli.py')!r})['render']())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for name in ("demo", "inspect", "rank", "search", "train", "leaderboard", "predict", "evaluate", "export"):
        assert f"## autotransfer {name}\n" in text, name
    assert "--stall-trials" in text and "--margin" in text  # full option lists, not the group's one-line stubs
    assert (ROOT / "docs" / "cli.md").read_text() == text, (
        "docs/cli.md is out of date with the commands' --help; regenerate it with: python docs/gen_cli.py")


def _local_targets(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links inside code blocks are examples
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, mailto:, ...


def _anchors(page: Path) -> set[str]:
    heads = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_pages_exist():
    names = {p.name for p in PAGES if p.parent.name == "docs"}
    assert {"concepts.md", "data.md", "cli.md", "python-api.md", "plugins.md", "distributed.md",
            "benchmarks.md"} <= names


def test_every_local_link_resolves():
    broken = []
    for page in PAGES:
        for target in _local_targets(page):
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading #{anchor} in {dest.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_link_checker_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Top\n\n[ok](#top) [gone](missing.md) [web](https://example.org)\n```\n[x](in-code.md)\n```\n")
    assert _local_targets(page) == ["#top", "missing.md"]
    assert _anchors(page) == {"top"}
