"""Make the pictures in the README's gallery (docs/), each from a saved run.

Run: .venv/bin/losstrail run --seed 0 --decision --out /tmp/sample.gif   (saves checkpoints/)
     .venv/bin/python examples/gallery.py
"""

import shutil
from pathlib import Path

import losstrail

DOCS = Path(__file__).resolve().parent.parent / "docs"
RUN = Path("checkpoints")


def html_screenshot(page: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 920, "height": 660})
        tab.goto(page.as_uri())
        tab.wait_for_function("window.losstrail !== undefined")
        tab.evaluate("window.losstrail.show(150)")
        tab.wait_for_timeout(500)
        tab.screenshot(path=str(out))
        browser.close()


def main() -> None:
    losstrail.render(RUN, DOCS / "sample.gif", max_frames=100, decision=False)
    losstrail.render(RUN, DOCS / "decision.png", step=60)
    losstrail.render(RUN, DOCS / "surface-3d.png", view="3d")
    losstrail.render(RUN, DOCS / "sample.html")
    html_screenshot(DOCS / "sample.html", DOCS / "html-page.png")
    (DOCS / "sample.html").unlink()  # 5 MB of plotly.js; the screenshot is what the README shows


if __name__ == "__main__":
    main()
