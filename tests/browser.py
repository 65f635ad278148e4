"""Open an HTML report in real headless Chromium (Debian's, installed by `make test`) through
playwright: console errors, failed requests, the images and their sizes, and a screenshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


def open_report(page_file: Path, screenshot: Path | None = None, *, width: int = 1200) -> dict[str, Any]:
    """``{"problems", "images": [(src, complete, w, h)], "headings", "text", "screenshot": bytes}``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda q: problems.append(f"failed: {q.url}"))
            page.goto(Path(page_file).as_uri(), wait_until="load")
            shot = page.screenshot(path=None if screenshot is None else str(screenshot), full_page=True)
            return {
                "problems": problems,
                "images": page.eval_on_selector_all(
                    "img", "imgs => imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight])"),
                "headings": page.eval_on_selector_all("h1, h2", "hs => hs.map(h => h.textContent.trim())"),
                "text": page.inner_text("body"),
                "screenshot": shot,
            }
        finally:
            browser.close()
