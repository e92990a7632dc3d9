"""Screenshot of the demo restoring an example, in Debian's chromium (docs/demo.png).

    python scripts/screenshot_demo.py --output docs/demo.png

Serves app.py on a free local port with the bundled model (or $LPIPDIFF_MODEL), uploads
examples/astronaut_photo_severe.png, clicks Restore and waits for the result.
"""

import argparse
import socket
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(ROOT / "docs" / "demo.png"))
    parser.add_argument("--example", default=str(ROOT / "examples" / "astronaut_photo_severe.png"))
    args = parser.parse_args()

    import sys

    sys.path.insert(0, str(ROOT))
    import app
    from lpipdiff.serving.service import RestorationService
    from lpipdiff.serving.settings import ServingSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.build_demo(RestorationService(ServingSettings.from_environment()))
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("input[type=file]").first.set_input_files(args.example)
            page.wait_for_timeout(1000)
            page.locator("#restore-button").click()
            page.get_by_text("Restored 1 face(s)").wait_for(timeout=300_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=args.output, full_page=True)
            browser.close()
    finally:
        demo.close()


if __name__ == "__main__":
    main()
