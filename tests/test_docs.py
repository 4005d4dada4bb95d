"""The documentation tells the truth: the configuration page is the generated one, and every link resolves.

    nice -n 5 .venv/bin/python -m pytest -q tests/test_docs.py

Regenerate the page after changing a field of trainingd/config.py:
    python -m trainingd.config --markdown > docs/configuration.md
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from trainingd import config
from trainingd.config_reference import markdown, sections

REPO = Path(__file__).resolve().parent.parent


def test_the_committed_configuration_page_is_the_generated_one():
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == markdown(), "regenerate: python -m trainingd.config --markdown > docs/configuration.md"


def test_the_page_lists_every_key_with_its_docstring():
    page = markdown()
    for prefix, cls in sections():
        for f in dataclasses.fields(cls):
            key = f"{prefix}.{f.name}" if prefix else f.name
            assert f"| `{key}` |" in page, key
    assert "| `lora.r` | integer | `16` |" in page
    assert "Peak learning rate." in page


def test_the_command_prints_the_page():
    r = subprocess.run([sys.executable, "-m", "trainingd.config", "--markdown"], capture_output=True, text=True,
                       cwd=REPO, timeout=60, check=True)
    assert r.stdout == markdown()


def test_every_relative_link_of_the_readme_and_docs_resolves():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_readme_links_every_topic_page():
    readme = (REPO / "README.md").read_text()
    for name in ("monitor", "lifecycle", "distributed", "operations", "devices", "configuration"):
        assert f"(docs/{name}.md)" in readme, name
    assert "./start_all.sh" in readme and "./run_tests.sh" in readme
    assert len(readme.splitlines()) < 150
    assert config.Config().base_model in readme
