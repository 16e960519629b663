"""Container health check: GET one URL, healthy on HTTP 200.

Usage: ``python infra/healthcheck.py [URL]``; without URL it reads ``SR_HEALTH_URL`` and, when that
is unset too, reports healthy (the image is used for several services; each service names its own
URL in infra/compose.yaml or a probe in infra/k8s/). Standard library only, so it runs in any
image stage. Exit status 0 healthy, 1 unhealthy (the reason on one line), as Docker expects.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    url = argv[0] if argv else os.environ.get("SR_HEALTH_URL", "")
    if not url:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            if resp.status == 200:
                return 0
            print(f"{url}: HTTP {resp.status}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
