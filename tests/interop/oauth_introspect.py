"""A token introspection endpoint (RFC 7662) for the test provider's Dovecot.

Dovecot's oauth2 passdb POSTs `token=...` here; the one valid token belongs to
alice@ext.test. Loopback only, test values only. Usage: oauth_introspect.py PORT
"""

import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

TOKENS = {"alice-oauth-token": "alice@ext.test"}


class Introspect(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        size = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(size).decode())
        user = TOKENS.get(form.get("token", [""])[0])
        body = {"active": True, "username": user} if user else {"active": False}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_):
        pass


HTTPServer(("127.0.0.1", int(sys.argv[1])), Introspect).serve_forever()
