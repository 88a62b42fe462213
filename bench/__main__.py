"""Every benchmark `make bench` runs, one after the other: `python -m bench`.

1. ``bench.gateway_vs_direct`` (memory state store);
2. ``bench.guards_overhead --state memory://``;
3. ``bench.guards_overhead --state redis://127.0.0.1:6379/15`` with fewer calls (a Redis decision
   is a network round trip), on a random key prefix deleted at the end; skipped with a note (and
   a JSON document saying so) when no Redis answers there. ``--redis URL`` names another one.

Each prints its own JSON document on stdout, progress on stderr, as when run alone. The exit
status is the first non-zero one, but every benchmark runs. About 2.5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence

REDIS_URL = "redis://127.0.0.1:6379/15"
# Per guards_overhead run on Redis: ~3 ms a call for the full pipeline, so fewer calls.
REDIS_SETTINGS = ["--calls", "3000", "--warmup", "300", "--attribution-calls", "1000", "--batches", "10"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis", default=REDIS_URL, help=f"the Redis of the third run ({REDIS_URL})")
    args = parser.parse_args(argv)
    runs = [
        ["bench.gateway_vs_direct", "--state", "memory://"],
        ["bench.guards_overhead", "--state", "memory://"],
        ["bench.guards_overhead", "--state", args.redis, "--skip-unreachable", *REDIS_SETTINGS],
    ]
    status = 0
    for run in runs:
        print(f"[bench] python -m {' '.join(run)}", file=sys.stderr, flush=True)
        code = subprocess.run([sys.executable, "-m", *run], check=False).returncode
        if code and not status:
            status = code
    return status


if __name__ == "__main__":
    raise SystemExit(main())
