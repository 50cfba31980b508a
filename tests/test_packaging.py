"""The project's set-up: metadata builds without deprecation, and the README's test command is what CI runs,
browser included (in CI, whose tests fail rather than skip without it)."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_is_an_spdx_expression():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"


def test_ci_runs_the_readme_test_command_and_that_command_installs_the_browser():
    lines = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith(("set ", "cd "))] == ["export CI=true", "./setup.sh test"]
    assert "./setup.sh test" in (ROOT / "README.md").read_text()
    setup = (ROOT / "setup.sh").read_text()
    assert setup.index("apt-get install -y -qq chromium chromium-driver") < setup.index("-m pytest")
