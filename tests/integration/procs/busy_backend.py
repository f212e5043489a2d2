"""An OpenAI-ish backend that is always busy: `busy_backend.py PORT MODEL`. GET /v1/models lists
MODEL; every POST answers 429 with `Retry-After: 7` and an OpenAI error body."""

import http.server
import json
import sys

port, model = int(sys.argv[1]), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, doc: dict, extra: dict[str, str]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": model, "object": "model"}]}, {})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        err = {"error": {"message": "busy", "type": "rate_limit_error", "code": "rate_limited"}}
        self._send(429, err, {"Retry-After": "7"})

    def log_message(self, *args: object) -> None:
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
