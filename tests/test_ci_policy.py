"""The no-silent-skips rule (README): under CI=true a missing real component fails the test, and a test that is
skipped for any other reason is reported as failed; on a developer machine without it, it is skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_component

ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ["pytester"]


def test_missing_component_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI requires opentracker is not available: apt-get install"):
        require_component("opentracker", False, "apt-get install opentracker")


def test_missing_component_skips_on_a_developer_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="libtorrent is not available"):
        require_component("libtorrent", False)


def test_present_component_neither_fails_nor_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require_component("ffmpeg", True)  # returns: the test goes on


def test_any_skip_is_a_failure_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report hook of tests/conftest.py itself, on a test that skips on its own (not via require_component)."""
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile("import pytest\n\n\ndef test_skips():\n    pytest.skip('no reason')\n")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("CI", "true")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(failed=1)
    monkeypatch.setenv("CI", "false")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(skipped=1)
