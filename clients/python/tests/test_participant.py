import json
import tempfile
import threading
import unittest

from baton import (Effects, Emit, FileEntityStore, MemoryEntityStore, NotDelivered, Participant, Permanent, Refusal, Refused,
                   Signal, TokenServiceError, VersionConflict, encode_signal, new_token_id)
from baton.entities import Entity

from .fakes import FakeTokens, unavailable


class FakeSender:
    def __init__(self):
        self.sent = []
        self.fail = None

    def send(self, sig):
        if self.fail:
            raise self.fail
        self.sent.append(sig)


def counting(forward_to=""):
    def handle(sig, state):
        state["count"] = state.get("count", 0) + 1
        emit = [Emit(forward_to, "count", sig.payload)] if forward_to else []
        return Effects(emit=emit, reply=json.dumps({"count": state["count"]}).encode())
    return handle


class ParticipantTest(unittest.TestCase):
    def setUp(self):
        self.tokens = FakeTokens("billing")
        self.entities = MemoryEntityStore()
        self.sender = FakeSender()
        self.p = Participant("billing", self.tokens, self.entities, self.sender, sweep_after=0)
        self.p.activity("count", lambda s: "e/" + json.loads(s.payload)["entity"], counting("shipping"))

    def signal(self, entity="a", live=True, **token):
        sig = Signal(id=new_token_id(), conversation=new_token_id(), causation=new_token_id(),
                     destination="billing", type="count", payload=json.dumps({"entity": entity}).encode())
        if live:
            self.tokens.add({**sig.token(), **token})
        return sig

    def post(self, sig, payload=None):
        headers = {k.lower(): [v] for k, v in encode_signal(sig).items()}
        body = sig.payload if payload is None else payload
        return self.p.handle("POST", headers, lambda n: body[:n], len(body))

    def count(self, entity):
        return self.entities.load("e/" + entity).state.get("count", 0)

    def test_applied_once_then_duplicate(self):
        sig = self.signal()
        a = self.post(sig)
        self.assertEqual((a.status, a.headers["Baton-Outcome"], json.loads(a.body)), (200, "applied", {"count": 1}))
        self.assertEqual(a.headers["Cache-Control"], "no-store")
        self.assertNotIn(sig.id, self.tokens.live)
        self.assertEqual(len(self.sender.sent), 1)
        child = self.sender.sent[0]
        self.assertEqual((child.conversation, child.causation, child.destination), (sig.conversation, sig.id, "shipping"))
        self.assertIn(child.id, self.tokens.live)
        b = self.post(sig)
        self.assertEqual((b.status, b.headers["Baton-Outcome"]), (409, "duplicate"))
        self.assertEqual(self.count("a"), 1)
        self.assertEqual(self.entities.load("e/a").outbox, [])
        # Every token call named the signal's conversation, so that a
        # service over a store split by conversation asks one part.
        self.assertEqual(self.tokens.unrouted, 0)

    def test_transition_failure_keeps_the_entry_and_a_retry_replays(self):
        sig = self.signal()
        self.tokens.fail_transitions = unavailable()
        a = self.post(sig)
        self.assertEqual(a.status, 503)
        self.assertEqual(a.headers["Retry-After"], "1")
        self.assertEqual(len(self.entities.load("e/a").outbox), 1)
        self.tokens.fail_transitions = None
        b = self.post(sig)
        self.assertEqual((b.status, b.headers["Baton-Outcome"], json.loads(b.body)), (200, "replayed", {"count": 1}))
        self.assertEqual(self.count("a"), 1)

    def test_token_service_down_applies_nothing(self):
        sig = self.signal()
        self.tokens.fail = unavailable()
        self.assertEqual(self.post(sig).status, 503)
        self.tokens.fail = TokenServiceError("bad key", 401, "unauthorized", True)
        self.assertEqual(self.post(sig).status, 503)
        self.tokens.fail = None
        self.assertEqual(self.count("a"), 0)
        self.assertEqual(self.post(sig).status, 200)

    def test_refusals_leave_the_token_live(self):
        sig = self.signal()
        tampered = Signal(**{**sig.__dict__, "payload": json.dumps({"entity": "b"}).encode()})
        self.assertTrue(json.loads(self.post(tampered).body)["type"].endswith("#problem-digest-mismatch"))
        other = Signal(**{**sig.__dict__, "conversation": new_token_id()})
        self.assertEqual(self.post(other).status, 422)
        foreign = self.signal(destination="shipping")
        self.assertEqual(self.post(foreign).status, 403)
        self.assertIn(sig.id, self.tokens.live)
        self.assertIn(foreign.id, self.tokens.live)
        self.assertEqual(self.post(sig).status, 200)

    def test_unknown_token_is_a_duplicate(self):
        a = self.post(self.signal(live=False))
        self.assertEqual((a.status, a.headers["Baton-Outcome"]), (409, "duplicate"))

    def test_expired_root_is_refused(self):
        sig = self.signal(causation="", expires_at="2000-01-01T00:00:00.000000Z")
        sig.causation = ""
        self.tokens.live[sig.id]["causation"] = ""
        self.assertEqual(self.post(sig).status, 410)
        self.assertEqual(self.count("a"), 0)

    def test_concurrent_copies_apply_once(self):
        sig = self.signal()
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(self.post(sig))) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sum(1 for a in answers if a.headers.get("Baton-Outcome") == "applied"), 1)
        self.assertEqual(self.count("a"), 1)

    def test_undelivered_child_is_finished_by_the_sweeper(self):
        sig = self.signal()
        self.sender.fail = NotDelivered("shipping is down")
        self.assertEqual(self.post(sig).status, 503)
        self.sender.fail = None
        self.assertEqual(self.p.sweep(), 1)
        self.assertEqual(len(self.sender.sent), 1)
        self.assertEqual(self.entities.load("e/a").outbox, [])
        self.assertEqual(self.post(sig).status, 409)
        self.assertEqual(self.count("a"), 1)

    def test_permanent_failure_is_rejected(self):
        self.p.activity("count", lambda s: "e/x", lambda s, st: (_ for _ in ()).throw(Permanent("db password=hunter2")))
        sig = self.signal()
        answer = self.post(sig)
        self.assertEqual(answer.status, 422)
        self.assertNotIn(b"hunter2", answer.body, "a Permanent's message stays in the participant")
        self.assertIn(sig.id, self.tokens.live)

    def test_refusal_tells_the_sender(self):
        self.p.activity("count", lambda s: "e/x", lambda s, st: (_ for _ in ()).throw(Refusal("quantity must be 1 to 10")))
        answer = self.post(self.signal())
        self.assertEqual((answer.status, json.loads(answer.body)["detail"]), (422, "quantity must be 1 to 10"))

    def test_bad_requests(self):
        self.assertEqual(self.p.handle("GET", {}, lambda n: b"", 0).headers["Allow"], "POST")
        self.assertEqual(self.p.handle("POST", {}, lambda n: b"", 0).status, 400)
        big = b" " * ((1 << 20) + 1)
        sig = self.signal()
        self.assertEqual(self.post(sig, big).status, 413)


class FileStoreTest(unittest.TestCase):
    def test_compare_and_set_and_reopen(self):
        with tempfile.TemporaryDirectory() as d:
            s = FileEntityStore(d)
            e = s.load("k")
            e.state = {"n": 1}
            s.commit(e, 0)
            with self.assertRaises(VersionConflict):
                s.commit(e, 0)
            again = FileEntityStore(d).load("k")
            self.assertEqual((again.version, again.state), (1, {"n": 1}))
            again.outbox = [{"id": "x"}]
            FileEntityStore(d).commit(again, 1)
            self.assertEqual([x.key for x in FileEntityStore(d).with_outbox()], ["k"])


if __name__ == "__main__":
    unittest.main()
