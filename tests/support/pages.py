"""Open a rendered page in the headless browser and check it: the browser and lab tests share it."""

from __future__ import annotations

from pathlib import Path

from tests import browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def check_page(page: Path, must_show: list[str]) -> browser.PageReport:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / (page.stem + ".png")
    seen = browser.render(page, shot)
    assert seen.console_errors == [], seen.console_errors
    assert browser.external_requests(seen, page) == []
    for text in must_show:
        assert text in seen.text, f"{text!r} not shown on {page}"
    assert shot.stat().st_size > 10_000  # a real picture, not an empty page
    assert seen.height > 600
    return seen
