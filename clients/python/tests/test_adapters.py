import http.client
import json
import threading
import unittest
from http.server import ThreadingHTTPServer
from wsgiref.simple_server import WSGIRequestHandler, make_server

from baton import Effects, MemoryEntityStore, Participant, Signal, encode_signal, new_token_id
from baton.adapters import request_handler, wsgi_app

from .fakes import FakeTokens


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def participant(tokens):
    p = Participant("billing", tokens, MemoryEntityStore())

    def handle(sig, state):
        state["count"] = state.get("count", 0) + 1
        return Effects(reply=json.dumps({"count": state["count"]}).encode())

    p.activity("count", lambda s: "e/" + json.loads(s.payload)["entity"], handle)
    return p


class AdapterTests:
    """The same requests through each adapter."""

    def start(self, tokens):
        raise NotImplementedError

    def setUp(self):
        self.tokens = FakeTokens("billing")
        self.port = self.start(self.tokens)

    def post(self, headers, body):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.addCleanup(conn.close)
        conn.putrequest("POST", "/signals")
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()

    def signal(self):
        sig = Signal(id=new_token_id(), conversation=new_token_id(), causation=new_token_id(),
                     destination="billing", type="count", payload=b'{"entity":"a"}')
        self.tokens.add(sig.token())
        return sig

    def test_applied_then_duplicate(self):
        sig = self.signal()
        status, headers, body = self.post(list(encode_signal(sig).items()), sig.payload)
        self.assertEqual((status, headers["Baton-Outcome"], json.loads(body)), (200, "applied", {"count": 1}))
        status, headers, _ = self.post(list(encode_signal(sig).items()), sig.payload)
        self.assertEqual((status, headers["Baton-Outcome"]), (409, "duplicate"))

    def test_a_repeated_header_is_refused(self):
        sig = self.signal()
        headers = list(encode_signal(sig).items()) + [("Baton-Token", sig.id)]
        status, _, _ = self.post(headers, sig.payload)
        self.assertEqual(status, 400)
        self.assertIn(sig.id, self.tokens.live)


class WSGITest(AdapterTests, unittest.TestCase):
    def start(self, tokens):
        server = make_server("127.0.0.1", 0, wsgi_app(participant(tokens)), handler_class=Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server.server_address[1]


class HTTPServerTest(AdapterTests, unittest.TestCase):
    def start(self, tokens):
        server = ThreadingHTTPServer(("127.0.0.1", 0), request_handler(participant(tokens)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server.server_address[1]


if __name__ == "__main__":
    unittest.main()
