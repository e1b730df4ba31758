"""The README's module map (## Design) and the package's layout say the same thing."""

from __future__ import annotations

import re

from helpers import REPO


def design_map() -> tuple[set[str], set[str]]:
    """(entries under ecod_jobs/, top-level entries) of the map's code block."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Design\n") :]
    block = section[section.index("```\n") + 4 :]
    block = block[: block.index("```")]
    package, top = set(), set()
    for line in block.splitlines():
        if match := re.match(r"^  ([A-Za-z_][\w.]*/?)\s", line + " "):
            package.add(match.group(1))
        elif match := re.match(r"^([A-Za-z_][\w.]*/)\s", line + " "):
            top.add(match.group(1))
    return package, top


def test_the_map_lists_every_module_and_only_modules_that_exist() -> None:
    package, top = design_map()
    root = REPO / "ecod_jobs"
    actual = {p.name for p in root.glob("*.py")} | {
        p.name + "/" for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))
    }
    assert sorted(actual - package) == [], "modules missing from the README's map"
    assert sorted(package - actual) == [], "the README's map names modules that do not exist"
    assert "ecod_jobs/" in top
    missing = sorted(t for t in top if not (REPO / t).is_dir())
    assert missing == [], "top-level directories in the map that do not exist"
