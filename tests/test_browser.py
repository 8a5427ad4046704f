"""Specification of lib.browser: what is missing to run the browser checks, and how to install it."""

import pytest

from lib import browser
from lib.errors import ExportError


def test_a_configured_chromium_path_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("CHROMIUM_PATH", str(tmp_path / "chromium"))
    assert browser.find_chromium() is None
    (tmp_path / "chromium").write_text("")
    assert browser.find_chromium() == str(tmp_path / "chromium")


def test_missing_tools_are_named_and_the_check_says_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setenv("CHROMIUM_PATH", str(tmp_path / "no-chromium"))
    missing = browser.missing_tools(web_dir=tmp_path)
    assert "chromium" in missing and any("playwright-core" in item for item in missing)
    monkeypatch.setattr(browser, "missing_tools", lambda: ["chromium"])
    with pytest.raises(ExportError, match="missing: chromium; install with `apt-get install -y chromium`"):
        browser.run_script("parity.mjs", {})
