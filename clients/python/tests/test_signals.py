import unittest

from baton import SignalError, decode_signal, digest_of, encode_signal, new_token_id
from baton.signals import Signal, is_token_id


def headers_of(sig: Signal) -> dict:
    return {k.lower(): [v] for k, v in encode_signal(sig).items()}


class TokenIDs(unittest.TestCase):
    def test_examples_of_the_protocol(self):
        for text, ok in [("5b2a0c8d6e9f4a1b8c7d6e5f4a3b2c1d", True), ("00000000000000000000000000000001", True),
                         ("5B2A0C8D6E9F4A1B8C7D6E5F4A3B2C1D", False), ("5b2a0c8d6e9f4a1b8c7d6e5f4a3b2c1", False),
                         ("5b2a0c8d-6e9f-4a1b-8c7d-6e5f4a3b2c1d", False), ("5b2a0c8d6e9f4a1b8c7d6e5f4a3b2c1g", False),
                         ("5b2a0c8d6e9f4a1b8c7d6e5f4a3b2c1d\n", False)]:
            self.assertEqual(is_token_id(text), ok, text)

    def test_new_ids_are_fresh_and_well_formed(self):
        ids = {new_token_id() for _ in range(1000)}
        self.assertEqual(len(ids), 1000)
        self.assertTrue(all(is_token_id(i) for i in ids))

    def test_digests_of_the_protocol(self):
        self.assertEqual(digest_of(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        self.assertEqual(digest_of(b'{"amount":12}'), "70e1d28f6239e1afba2e3a3b9671674417e76f46126b75b9d5fe0436d752a013")


class Requests(unittest.TestCase):
    def setUp(self):
        self.sig = Signal(id=new_token_id(), conversation=new_token_id(), causation=new_token_id(),
                          destination="billing", type="charge", payload=b'{"amount":12}')

    def test_round_trip(self):
        self.assertEqual(decode_signal(headers_of(self.sig), self.sig.payload), self.sig)

    def test_refusals(self):
        cases = {
            "missing token": lambda h: h.pop("baton-token"),
            "repeated token": lambda h: h["baton-token"].append(self.sig.id),
            "joined by WSGI": lambda h: h.__setitem__("baton-token", [self.sig.id + ", " + self.sig.id]),
            "upper case id": lambda h: h.__setitem__("baton-token", [self.sig.id.upper()]),
            "all-zero id": lambda h: h.__setitem__("baton-token", ["0" * 32]),
            "other idempotency key": lambda h: h.__setitem__("idempotency-key", ['"' + new_token_id() + '"']),
            "type with a space": lambda h: h.__setitem__("baton-type", ["two words"]),
            "missing destination": lambda h: h.pop("baton-destination"),
        }
        for name, change in cases.items():
            with self.subTest(name):
                h = headers_of(self.sig)
                change(h)
                with self.assertRaises(SignalError):
                    decode_signal(h, self.sig.payload)

    def test_invalid_trace_context_is_dropped_not_refused(self):
        h = headers_of(self.sig)
        h["traceparent"] = ["00-" + "0" * 32 + "-00f067aa0ba902b7-01"]
        self.assertEqual(decode_signal(h, self.sig.payload).traceparent, "")


if __name__ == "__main__":
    unittest.main()
