"""Container health check: GET a health endpoint of the local gunicorn; exit 0 on HTTP 200, else 1.

Usage: python docker/healthcheck.py [/healthz|/readyz]

Standard library only (no curl in the image). Django rejects a Host header that is not in
ALLOWED_HOSTS, so the request carries the first allowed host rather than 127.0.0.1.
"""

import os
import sys
import urllib.error
import urllib.request


def host_header() -> str:
    hosts = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
    host = hosts[0] if hosts else "localhost"
    if host == "*":
        return "localhost"
    return host.lstrip(".")  # ".example.com" allows example.com and its subdomains


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "/healthz"
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}{path}"
    # X-Forwarded-Proto: the check talks to gunicorn directly, as a TLS-terminating proxy would.
    request = urllib.request.Request(url, headers={"Host": host_header(), "X-Forwarded-Proto": "https"})
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            body = response.read(512).decode(errors="replace")
            status = response.status
    except urllib.error.HTTPError as exc:
        body = exc.read(512).decode(errors="replace")
        status = exc.code
    except OSError as exc:
        print(f"{url}: {exc}")
        return 1
    print(f"{url}: HTTP {status} {body}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
