"""Screenshot the HTML timeline of a tutorial example for the docs.

``python tools/screenshot_timeline.py examples/locks.py docs/img/timeline-locks.png``
(Debian's chromium, driven by Playwright; never ``playwright install``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main(example: str, out: str) -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "timeline.html"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "aiotrace",
                "run",
                "-q",
                "--no-trace-file",
                f"--html={page_path}",
                example,
            ],
            check=True,
            capture_output=True,
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"),
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                ],
            )
            page = browser.new_page(viewport={"width": 1200, "height": 420})
            page.goto(page_path.as_uri())
            page.wait_for_function("window.aiotraceTimeline && window.aiotraceTimeline.ready")
            waits = [b for b in page.evaluate("aiotraceTimeline.bars()") if b["kind"] == "wait"]
            if waits:  # show who blocked the longest wait
                last = waits[-1]["id"]
                where = page.evaluate("id => aiotraceTimeline.barRect(id)", last)
                page.mouse.click(where["x"], where["y"])
            page.screenshot(path=out, full_page=True)
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
