"""The token service client against a real token service.

The Go test in clients/python starts one and sets BATON_TEST_TOKEN_SERVICE,
BATON_TEST_EDGE_KEY (a system "edge" that may issue roots and observe),
BATON_TEST_BILLING_KEY (the system "billing") and BATON_TEST_MAX_BODY (the
service's body limit); without them these tests skip.
"""

import http.server
import json
import os
import re
import threading
import unittest

from baton import MAX_BATCH, Signal, TokenServiceClient, TokenServiceError, digest_of, new_token_id

URL = os.environ.get("BATON_TEST_TOKEN_SERVICE", "")
_PROBLEM = "https://github.com/batonhq/baton/blob/main/docs/token-service.md#problem-"


@unittest.skipUnless(URL, "BATON_TEST_TOKEN_SERVICE is not set (the Go test in clients/python sets it)")
class TokenServiceTest(unittest.TestCase):
    def setUp(self):
        self.edge = TokenServiceClient(URL, os.environ["BATON_TEST_EDGE_KEY"])
        self.billing = TokenServiceClient(URL, os.environ["BATON_TEST_BILLING_KEY"])

    def test_issue_claim_transition(self):
        root = self.edge.issue_root({"destination": "billing", "type": "charge", "digest": digest_of(b"{}"),
                                     "expires_at": "2999-01-01T00:00:00Z"})
        self.assertEqual(root["conversation"], root["id"])
        self.assertEqual(self.billing.get(root["id"])["digest"], digest_of(b"{}"))
        claimed = self.billing.claim(root["id"])
        self.assertNotIn("expires_at", claimed)
        child = Signal(id=new_token_id(), conversation=root["conversation"], causation=root["id"],
                       destination="shipping", type="ship")
        self.assertTrue(self.billing.transition(root["id"], [child.token()]))
        self.assertFalse(self.billing.transition(root["id"], []))
        with self.assertRaises(TokenServiceError) as caught:
            self.billing.get(root["id"])
        self.assertTrue(caught.exception.not_found)
        listed = self.edge.list_by_conversation(root["conversation"])
        self.assertEqual([t["id"] for t in listed["tokens"]], [child.id])

    def test_batches(self):
        def root(destination):
            return self.edge.issue_root({"destination": destination, "type": "charge", "digest": digest_of(b"{}")})
        first, second, elsewhere = root("billing"), root("billing"), root("shipping")
        absent = new_token_id()
        read = self.billing.read_tokens([first["id"], absent, second["id"], elsewhere["id"]],
                                        [first["conversation"], "", "", ""])
        self.assertEqual([r["id"] if isinstance(r, dict) else r for r in read[:3]], [first["id"], None, second["id"]])
        self.assertIsInstance(read[3], TokenServiceError)
        self.assertEqual((read[3].status, read[3].problem, read[3].not_applied), (403, "not-your-token", True))

        child = Signal(id=new_token_id(), conversation=first["conversation"], causation=first["id"],
                       destination="shipping", type="ship")
        done = self.billing.transition_batch([
            {"consume": first["id"], "create": [child.token()], "conversation": first["conversation"]},
            {"consume": absent},
            {"consume": elsewhere["id"]},
            {"consume": second["id"]},
        ])
        self.assertEqual(done[:2], [True, False])
        self.assertIsInstance(done[2], TokenServiceError)
        self.assertTrue(done[2].not_applied)
        self.assertTrue(done[3])
        self.assertEqual(self.billing.read_tokens([first["id"], second["id"]]), [None, None])
        self.assertEqual(self.edge.get(child.id)["causation"], first["id"])

    def test_reads_zero_and_malformed_ids_as_get(self):
        tok = self.edge.issue_root({"destination": "billing", "type": "charge", "digest": digest_of(b"{}")})
        with self.assertRaises(TokenServiceError) as caught:
            self.billing.get("nope")
        refused = caught.exception
        read = self.billing.read_tokens([tok["id"], "0" * 32, "nope"])
        self.assertEqual([read[0]["id"], read[1]], [tok["id"], None])
        self.assertIsInstance(read[2], TokenServiceError)
        self.assertEqual((read[2].status, read[2].problem, read[2].not_applied),
                         (refused.status, refused.problem, refused.not_applied))

    def test_a_batch_too_large_is_sent_in_halves(self):
        max_body = int(os.environ["BATON_TEST_MAX_BODY"])
        roots = [self.edge.issue_root({"destination": "billing", "type": "charge", "digest": digest_of(b"{}")})
                 for _ in range(4)]

        def children(root):
            kid = Signal(id=new_token_id(), conversation=root["conversation"], causation=root["id"],
                         destination="shipping", type="ship").token()
            # Each transition a third of the limit: two fit in a request, four do not.
            return [dict(kid, id=new_token_id()) for _ in range(max_body // 3 // len(json.dumps(kid)))]
        batch = [{"consume": r["id"], "create": children(r)} for r in roots]
        self.assertGreater(len(json.dumps({"transitions": batch})), max_body, "the batch is too large for one request")
        self.assertEqual(self.billing.transition_batch(batch), [True] * 4)
        kids = [c["id"] for t in batch for c in t["create"]]
        self.assertEqual([t["id"] for t in self.edge.read_tokens(kids)], kids)

    def test_refuses_a_token_twice_before_sending(self):
        first = self.edge.issue_root({"destination": "billing", "type": "charge", "digest": digest_of(b"{}")})
        batch = [{"consume": first["id"]}] + [{"consume": new_token_id()} for _ in range(MAX_BATCH)]
        batch.append({"consume": first["id"]})
        with self.assertRaises(ValueError):
            self.billing.transition_batch(batch)
        self.assertEqual(self.billing.get(first["id"])["id"], first["id"], "nothing was sent: the token is live")

    def test_a_conversation_for_each_id(self):
        with self.assertRaises(ValueError):
            self.billing.read_tokens([new_token_id(), new_token_id()], [new_token_id()])

    def test_batches_larger_than_one_request(self):
        ids = [new_token_id() for _ in range(MAX_BATCH * 2 + 1)]
        self.assertEqual(self.billing.read_tokens(ids), [None] * len(ids))
        self.assertEqual(self.billing.transition_batch([{"consume": i} for i in ids]), [False] * len(ids))

    def test_errors_carry_the_problem(self):
        with self.assertRaises(TokenServiceError) as caught:
            self.billing.issue_root({"destination": "billing", "type": "charge"})
        self.assertEqual((caught.exception.status, caught.exception.problem), (403, "forbidden"))
        self.assertTrue(caught.exception.not_applied)
        wrong = TokenServiceClient(URL, "bk_not-a-key")
        with self.assertRaises(TokenServiceError) as caught:
            wrong.get(new_token_id())
        self.assertEqual(caught.exception.status, 401)
        self.assertTrue(caught.exception.unavailable)
        down = TokenServiceClient("http://127.0.0.1:1", "k", timeout=1)
        with self.assertRaises(TokenServiceError) as caught:
            down.get(new_token_id())
        self.assertEqual(caught.exception.status, 0)


class _Fake(http.server.BaseHTTPRequestHandler):
    """A fake token service's handler: reply answers, and nothing is logged."""

    def reply(self, status: int, kind: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class _Answers(_Fake):
    """Answers every request with the status and body its path names."""

    answers = {
        "/v1/tokens/" + "a" * 32: (502, "text/html", b"<html>bad gateway</html>"),
        "/v1/tokens/" + "b" * 32: (404, "application/problem+json",
                                   b'{"type":"https://github.com/batonhq/baton/blob/main/docs/token-service.md#problem-no-such-route","status":404}'),
        "/v1/tokens/" + "c" * 32: (500, "application/problem+json",
                                   b'{"type":"https://github.com/batonhq/baton/blob/main/docs/token-service.md#problem-outcome-unknown","status":500}'),
        "/v1/tokens/" + "d" * 32: (403, "text/html", b"<html>forbidden</html>"),
    }

    def do_GET(self):
        self.reply(*self.answers[self.path])


class NotAppliedTest(unittest.TestCase):
    """not_applied is True only where the answer proves nothing was written."""

    def test_not_applied(self):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.shutdown)
        client = TokenServiceClient(f"http://127.0.0.1:{server.server_address[1]}", "k", timeout=5)
        for token_id, want in (("a" * 32, False), ("b" * 32, True), ("c" * 32, False), ("d" * 32, True)):
            with self.assertRaises(TokenServiceError) as caught:
                client.get(token_id)
            self.assertEqual(caught.exception.not_applied, want, f"{token_id[0]}: {caught.exception}")


class _Batches(_Fake):
    """Consumes every token of a batch, or answers 503 not-applied for a batch naming "e" * 32."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if any(t["consume"] == "e" * 32 for t in body["transitions"]):
            status, kind = 503, "application/problem+json"
            answer = {"type": "https://github.com/batonhq/baton/blob/main/docs/token-service.md#problem-not-applied",
                      "status": 503}
        else:
            status, kind = 200, "application/json"
            answer = {"results": [{"consumed": True} for _ in body["transitions"]]}
        self.reply(status, kind, json.dumps(answer).encode())


class BatchRequestsTest(unittest.TestCase):
    """A batch sent in several requests loses no applied result to a later request's error."""

    def test_later_request_error_is_each_transitions(self):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Batches)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        client = TokenServiceClient(f"http://127.0.0.1:{server.server_address[1]}", "k", timeout=5)
        applied = [{"consume": new_token_id()} for _ in range(MAX_BATCH)]
        done = client.transition_batch(applied + [{"consume": "e" * 32}])
        self.assertEqual(done[:MAX_BATCH], [True] * MAX_BATCH, "the first request was applied: its results stay")
        self.assertIsInstance(done[MAX_BATCH], TokenServiceError)
        self.assertEqual((done[MAX_BATCH].status, done[MAX_BATCH].problem), (503, "not-applied"))
        with self.assertRaises(TokenServiceError) as caught:
            client.transition_batch([{"consume": "e" * 32}] + applied)
        self.assertTrue(caught.exception.not_applied, "the first request's error is the whole call's")


def _id_of(prefix: str, i: int) -> str:
    """A distinct token id for each i, starting with prefix (one hex digit)."""
    return prefix + format(i, "031x")


def _serve(test: unittest.TestCase, handler) -> TokenServiceClient:
    """Starts a server of handler for the test; a client of it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    test.addCleanup(server.server_close)
    test.addCleanup(server.shutdown)
    test.server = server
    return TokenServiceClient(f"http://127.0.0.1:{server.server_address[1]}", "k", timeout=5)


class _TooLarge(_Fake):
    """Records each batch request's transitions; takes at most two in a request, and three children in each.

    As a service whose --max-body they exceed, it answers larger requests
    413 body-too-large. It consumes the tokens whose ids start with "a".
    """

    def do_POST(self):
        transitions = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["transitions"]
        self.server.requests.append(transitions)
        if len(transitions) > 2 or any(len(t["create"]) > 3 for t in transitions):
            status, kind = 413, "application/problem+json"
            answer = {"type": "https://github.com/batonhq/baton/blob/main/docs/token-service.md#problem-body-too-large",
                      "status": 413}
        else:
            status, kind = 200, "application/json"
            answer = {"results": [{"consumed": t["consume"].startswith("a")} for t in transitions]}
        self.reply(status, kind, json.dumps(answer).encode())


def _child(token_id: str) -> dict:
    return {"id": token_id, "conversation": "c" * 32, "causation": "c" * 32, "destination": "shipping", "type": "t",
            "digest": "0" * 64}


class TransitionBatchTest(unittest.TestCase):
    """transition_batch as the Go client's TransitionTokens: checked whole, and split where too large."""

    def test_sends_a_request_too_large_again_in_halves(self):
        client = _serve(self, _TooLarge)
        ids = [_id_of("a", 1), _id_of("b", 2), _id_of("a", 3), _id_of("a", 4)]
        self.assertEqual(client.transition_batch([{"consume": i} for i in ids]), [True, False, True, True])
        self.assertEqual([[t["consume"] for t in r] for r in self.server.requests], [ids, ids[:2], ids[2:]])

    def test_a_transition_too_large_alone_keeps_its_413(self):
        client = _serve(self, _TooLarge)
        big = {"consume": _id_of("a", 1), "create": [_child(_id_of("d", i)) for i in range(4)]}
        done = client.transition_batch([big, {"consume": _id_of("a", 2)}])
        self.assertIsInstance(done[0], TokenServiceError, "after a split, the 413 of a transition alone is its own result")
        self.assertEqual((done[0].status, done[0].problem, done[0].not_applied), (413, "body-too-large", True))
        self.assertIs(done[1], True)
        self.assertEqual([len(r) for r in self.server.requests], [2, 1, 1])
        with self.assertRaises(TokenServiceError) as caught:
            client.transition_batch([big])
        self.assertEqual(caught.exception.status, 413, "unsplit, the first request's error is the whole call's")

    def test_refuses_a_token_consumed_twice_across_requests(self):
        client = _serve(self, _TooLarge)
        batch = [{"consume": _id_of("a", i)} for i in range(150)]
        batch[120] = {"consume": _id_of("a", 3)}
        with self.assertRaises(ValueError):
            client.transition_batch(batch)
        self.assertEqual(self.server.requests, [], "nothing was sent")

    def test_refuses_a_child_with_the_id_of_a_consumed_token(self):
        client = _serve(self, _TooLarge)
        with self.assertRaises(ValueError):
            client.transition_batch([{"consume": _id_of("a", 1)},
                                     {"consume": _id_of("a", 2), "create": [_child(_id_of("a", 1))]}])
        self.assertEqual(self.server.requests, [], "nothing was sent")


class _Reads(_Fake):
    """Records each read request; answers a token for the ids that start with "a", not-found for the others.

    As the service, it refuses a request that names a malformed id, or the
    zero id, whole with 400; so it answers a GET of any token.
    """

    def do_POST(self):
        ids = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["ids"]
        self.server.requests.append((ids, self.headers.get("Baton-Conversations")))
        if not all(i != "0" * 32 and re.fullmatch("[0-9a-f]{32}", i) for i in ids):
            self._answer(400, {"type": _PROBLEM + "invalid-request", "status": 400})
            return
        self._answer(200, {"results": [{"token": {"id": i}} if i.startswith("a") else
                                       {"problem": {"type": _PROBLEM + "not-found", "status": 404}} for i in ids]})

    def do_GET(self):
        self.server.requests.append((self.path, None))
        self._answer(400, {"type": _PROBLEM + "invalid-request", "status": 400})

    def _answer(self, status, doc):
        self.reply(status, "application/json" if status == 200 else "application/problem+json", json.dumps(doc).encode())


class ReadTokensTest(unittest.TestCase):
    """read_tokens answers an id the service would refuse as get does, without sending it."""

    def test_zero_and_malformed_ids(self):
        client = _serve(self, _Reads)
        with self.assertRaises(TokenServiceError) as caught:
            client.get("0" * 32)
        self.assertTrue(caught.exception.not_found, "the zero id is no token's")
        self.assertEqual(self.server.requests, [], "get sent nothing for the zero id")

        conv = "c" * 32
        read = client.read_tokens([_id_of("a", 1), "0" * 32, "A" * 32, _id_of("b", 2)], [conv, conv, conv, ""])
        self.assertEqual(read[0], {"id": _id_of("a", 1)})
        self.assertIsNone(read[1], "the zero id reads as a token not live")
        self.assertIsInstance(read[2], TokenServiceError, "a malformed id is its own error, as get's 400")
        self.assertEqual((read[2].status, read[2].problem, read[2].not_applied), (400, "invalid-request", True))
        self.assertIsNone(read[3])
        self.assertEqual(self.server.requests, [([_id_of("a", 1), _id_of("b", 2)], conv + ",")],
                         "only the well-formed ids are sent, with their conversations")


class PathTest(unittest.TestCase):
    """An id or name goes into the path as one segment: it cannot name another route."""

    def test_ids_are_one_segment(self):
        client = _serve(self, _Reads)
        for call in (lambda: client.get("x/claim"), lambda: client.list_by_conversation("../destinations/billing")):
            with self.assertRaises(TokenServiceError):
                call()
        self.assertEqual([path for path, _ in self.server.requests],
                         ["/v1/tokens/x%2Fclaim", "/v1/conversations/..%2Fdestinations%2Fbilling/tokens"])


class _Unreadable(_Fake):
    """Answers every request 200 with the server's answer, and every request but the first if it has later."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(self.path)
        data = self.server.answer if len(self.server.requests) == 1 or not hasattr(self.server, "later") else self.server.later
        self.reply(200, "application/json", data)


class UnreadableAnswerTest(unittest.TestCase):
    """A 200 that is no batch answer is an error of unknown outcome, as the rest of the client's."""

    def test_unreadable_answers(self):
        for answer in (b"<html>", b"null", b"[]", b'{"results":[null]}'):
            client = _serve(self, _Unreadable)
            self.server.answer = answer
            with self.assertRaises(TokenServiceError) as caught:
                client.transition_batch([{"consume": new_token_id()}])
            self.assertFalse(caught.exception.not_applied, f"transition_batch, answered {answer!r}: the outcome is unknown")
            self.assertTrue(caught.exception.unavailable, "worth retrying")
            with self.assertRaises(TokenServiceError) as caught:
                client.read_tokens([new_token_id()])
            self.assertFalse(caught.exception.not_applied, f"read_tokens, answered {answer!r}")

    def test_a_later_requests_unreadable_answer_is_each_transitions(self):
        client = _serve(self, _Unreadable)
        self.server.answer = json.dumps({"results": [{"consumed": True}] * MAX_BATCH}).encode()
        self.server.later = b"<html>"
        done = client.transition_batch([{"consume": new_token_id()} for _ in range(MAX_BATCH + 1)])
        self.assertEqual(done[:MAX_BATCH], [True] * MAX_BATCH)
        self.assertIsInstance(done[MAX_BATCH], TokenServiceError)
        self.assertFalse(done[MAX_BATCH].not_applied)


class _Elsewhere(http.server.BaseHTTPRequestHandler):
    """Records the Authorization header of every request it gets."""

    def do_GET(self):
        self.server.seen.append(self.headers.get("Authorization"))
        self.send_response(418)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class _Redirecting(http.server.BaseHTTPRequestHandler):
    """Redirects every request to the server named by the class's target."""

    target = ""

    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class RedirectTest(unittest.TestCase):
    """The client sends its key to the service it was given and nowhere else.

    urllib follows a redirect with every header of the request, Authorization
    included, to any host: a redirect took the API key to wherever it
    pointed. The client follows none; a redirect is an answer.
    """

    def test_follows_no_redirect(self):
        elsewhere = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Elsewhere)
        elsewhere.seen = []
        redirecting = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("R", (_Redirecting,), {
            "target": f"http://127.0.0.1:{elsewhere.server_address[1]}"}))
        for server in (elsewhere, redirecting):
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.addCleanup(server.server_close)
            self.addCleanup(server.shutdown)
        client = TokenServiceClient(f"http://127.0.0.1:{redirecting.server_address[1]}", "bk_secret", timeout=5)
        with self.assertRaises(TokenServiceError) as caught:
            client.get(new_token_id())
        self.assertEqual(caught.exception.status, 302)
        self.assertFalse(caught.exception.not_applied)
        self.assertEqual(elsewhere.seen, [])


if __name__ == "__main__":
    unittest.main()
