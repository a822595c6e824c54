"""The README stays a front page: its test command is what CI runs, its links resolve, and it stays short."""

from __future__ import annotations

import re

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_readme_test_command_is_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    commands = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    assert ci in commands, "the README's test command and .ci/run differ"


def test_readme_links_resolve_and_it_stays_short():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith(("http://", "https://")):
            assert (REPO / target).exists(), f"README links to {target}, which does not exist"
    assert len(README.splitlines()) < 250
