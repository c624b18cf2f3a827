"""Browser tests are rerun only for the named front-end races (tests.browser), and the summary lists reruns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

SAMPLE = f"""
import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from tests.browser import RERUN_FRONT_END_RACES, FrontEndRace

tries = {{"race": 0, "bug": 0}}

@RERUN_FRONT_END_RACES
def test_race_then_pass():
    tries["race"] += 1
    if tries["race"] == 1:
        raise FrontEndRace("the page-load refresh never landed")

@RERUN_FRONT_END_RACES
def test_a_wrong_value_fails_at_once():
    tries["bug"] += 1
    assert tries["bug"] == 99, f"try {{tries['bug']}}"
"""


def test_only_named_races_are_rerun_and_the_summary_lists_them(tmp_path):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO_ROOT / "pyproject.toml"), "--rootdir", str(tmp_path)]
        + ["-p", "no:cacheprovider", str(tmp_path / "test_sample.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 1, out
    assert "RERUN test_sample.py::test_race_then_pass" in out  # -rR (pyproject addopts) prints reruns
    assert "PASSED test_sample.py::test_race_then_pass" in out
    assert "RERUN test_sample.py::test_a_wrong_value_fails_at_once" not in out
    assert "try 1" in out and "try 2" not in out
    assert "1 failed, 1 passed, 1 rerun" in out
