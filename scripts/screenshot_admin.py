"""Render the admin UI with realistic data in headless Chromium and save docs/img/admin.png.

    .venv/bin/python scripts/screenshot_admin.py [--out docs/img/admin.png] [--width 1400]

Uses Debian's Chromium (scripts/ensure-chromium.sh installs it) through Playwright, signed in as
an admin of group ``ops``; the data is tests/web/demo.py's mid-incident dashboard.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from starlette.applications import Starlette  # noqa: E402

from gateway.core.clock import ManualClock  # noqa: E402
from gateway.web.routes import admin_routes  # noqa: E402
from tests.web.backend import ALICE_TOKEN, admins  # noqa: E402
from tests.web.browser import CHROMIUM, chromium_page_open, log_in  # noqa: E402
from tests.web.demo import demo_gateway  # noqa: E402
from tests.web.serve import serve  # noqa: E402


async def shoot(out: Path, width: int) -> None:
    # The demo moves its clock about 11 minutes forward; start it that far back so that the
    # page shows times around the real now.
    clock = ManualClock(wall_start=time.time() - 660)
    gateway = await demo_gateway(clock, admins())
    async with (
        serve(Starlette(routes=admin_routes(gateway))) as base,
        chromium_page_open(width=width) as page,
    ):
        await log_in(page, base, ALICE_TOKEN)
        await page.wait_for_selector("#pending article")
        out.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(out), full_page=True)
    print(f"wrote {out} ({width} px wide) with {CHROMIUM}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "admin.png")
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args()
    anyio.run(shoot, args.out, args.width)


if __name__ == "__main__":
    main()
