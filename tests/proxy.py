"""A forwarding HTTP proxy on loopback for the tests: python3 tests/proxy.py HOST DIRECTORY.

Requests for http://HOST/... are answered from DIRECTORY (HOST need not resolve: only a
client that goes through the proxy reaches it); requests for other hosts are forwarded. Prints
"port N" once listening, and one line per request ("GET http://HOST/path 200") to stdout.
"""

from __future__ import annotations

import http.server
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit


class Proxy(http.server.BaseHTTPRequestHandler):
    host = ""
    root = Path()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        status = self._local(url.path) if url.hostname == self.host else self._forward()
        sys.stdout.write(f"{self.command} {self.path} {status}\n")
        sys.stdout.flush()

    do_HEAD = do_GET

    def _local(self, path: str) -> int:
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(self.root) or not file.is_file():
            self.send_error(404)
            return 404
        self.send_response(200)
        self.send_header("Content-Length", str(file.stat().st_size))
        self.end_headers()
        if self.command == "GET":
            with file.open("rb") as f:
                shutil.copyfileobj(f, self.wfile)
        return 200

    def _forward(self) -> int:
        request = urllib.request.Request(self.path, method=self.command)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                self.send_response(answer.status)
                for name in ("Content-Length", "Content-Type", "Last-Modified"):
                    if answer.headers.get(name):
                        self.send_header(name, answer.headers[name])
                self.end_headers()
                if self.command == "GET":
                    shutil.copyfileobj(answer, self.wfile)
                return int(answer.status)
        except urllib.error.HTTPError as err:
            self.send_error(err.code)
            return err.code
        except OSError:
            self.send_error(502)
            return 502

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    Proxy.host, Proxy.root = sys.argv[1], Path(sys.argv[2]).resolve()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    sys.stdout.write(f"port {server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
