import json
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from baton import Refused, NotDelivered, Sender, Signal, new_token_id


class Script(BaseHTTPRequestHandler):
    """Answers each request with the next (status, headers, body) of the server's script."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})
        status, headers, body = self.server.script.pop(0) if self.server.script else (200, {}, b"")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class SenderTest(unittest.TestCase):
    def setUp(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Script)
        self.server.script, self.server.seen = [], []
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.sleeps = []
        url = f"http://127.0.0.1:{self.server.server_address[1]}/signals"
        self.sender = Sender({"billing": url}, sleep=self.sleeps.append, deadline=60)
        self.sig = Signal(id=new_token_id(), conversation=new_token_id(), destination="billing", type="charge", payload=b"{}")

    def test_retries_until_delivered_and_honours_retry_after(self):
        problem = {"Content-Type": "application/problem+json"}
        in_progress = json.dumps({"type": "https://github.com/batonhq/baton/blob/main/docs/protocol.md#problem-in-progress",
                                  "title": "In Progress", "status": 409}).encode()
        self.server.script = [(503, {"Retry-After": "3"}, b""), (409, problem, in_progress), (429, {}, b""),
                              (200, {"Baton-Outcome": "applied"}, b"ok")]
        d = self.sender.send(self.sig)
        self.assertEqual((d.status, d.reply), (200, b"ok"))
        self.assertEqual(self.sleeps[0], 3.0)
        self.assertEqual(len(self.server.seen), 4)
        self.assertTrue(all(h["idempotency-key"] == f'"{self.sig.id}"' for h in self.server.seen))

    def test_duplicate_is_delivered(self):
        self.server.script = [(409, {"Baton-Outcome": "duplicate"}, b"")]
        self.assertEqual(self.sender.send(self.sig).outcome, "duplicate")

    def test_other_client_errors_and_redirects_are_refused(self):
        for status, headers in [(422, {}), (302, {"Location": "http://example.invalid/"})]:
            with self.subTest(status):
                self.server.script = [(status, headers, b"")]
                with self.assertRaises(Refused) as caught:
                    self.sender.send(self.sig)
                self.assertEqual(caught.exception.status, status)

    def test_gives_up_at_the_deadline(self):
        self.sender.deadline = 0.5
        self.server.script = [(503, {"Retry-After": "1"}, b"")] * 3
        with self.assertRaises(NotDelivered):
            self.sender.send(self.sig)


if __name__ == "__main__":
    unittest.main()
