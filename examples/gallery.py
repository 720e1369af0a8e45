"""Make the pictures of the README's gallery, each from a saved run.

Run: .venv/bin/losstrail run --seed 0 --decision --out /tmp/sample.gif   (saves checkpoints/)
     .venv/bin/python examples/gallery.py --out-dir /tmp/gallery
The pictures go to --out-dir (default: gallery/ in the current folder); --out-dir docs
refreshes the README's own copies.
"""

import argparse
import shutil
from pathlib import Path

import losstrail


def html_screenshot(page: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1300, "height": 680})
        tab.goto(page.as_uri())
        tab.wait_for_function("window.losstrail !== undefined")
        tab.wait_for_timeout(500)  # as it opens: at the last step
        tab.screenshot(path=str(out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("gallery"), help="where the pictures go")
    parser.add_argument("--run", type=Path, default=Path("checkpoints"), help="the saved run to draw")
    args = parser.parse_args()
    out, run = args.out_dir, args.run
    out.mkdir(parents=True, exist_ok=True)
    losstrail.render(run, out / "sample.gif", max_frames=100, decision=False)
    losstrail.render(run, out / "decision.png", step=60)
    losstrail.render(run, out / "surface-3d.png", view="3d")
    losstrail.render(run, out / "sample.html")
    html_screenshot(out / "sample.html", out / "html-page.png")
    (out / "sample.html").unlink()  # 5 MB of plotly.js; the screenshot is what the README shows


if __name__ == "__main__":
    main()
