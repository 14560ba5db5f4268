"""The repository stands alone: every document it cites (``docs/NAME.md``) is in it, and no
file points at documents outside it (``shared/docs``)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tracked_text_files():
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in out.splitlines():
        if name.endswith((".py", ".md", ".toml", ".txt", ".cfg")) or name in ("Makefile",):
            p = REPO / name
            if p.is_file():
                yield p


def test_cited_docs_exist_and_nothing_cites_outside_the_repository():
    cited, outside = set(), []
    for p in _tracked_text_files():
        if p.name == Path(__file__).name:
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        if "shared/docs" in text:
            outside.append(str(p.relative_to(REPO)))
        cited.update(re.findall(r"(?<![\w/.])docs/([A-Za-z_]+\.md)", text))
    assert outside == []
    missing = sorted(c for c in cited if not (REPO / "docs" / c).is_file())
    assert missing == []
    assert {"MODEL.md", "FAMILY.md", "LAVA.md"} <= cited  # the science the code cites is in docs/
