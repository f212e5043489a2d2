"""A tiny HTTP server: `http_app.py PORT [STATUS_FILE]`. GET any path answers the status code
written in STATUS_FILE (200 when absent). Waits `READY_AFTER` seconds (env) before listening."""

import http.server
import os
import sys
import time

port = int(sys.argv[1])
status_file = sys.argv[2] if len(sys.argv) > 2 else None
time.sleep(float(os.environ.get("READY_AFTER", "0")))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200
        if status_file and os.path.exists(status_file):
            status = int(open(status_file).read().strip() or 200)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


print(f"listening on {port}", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
