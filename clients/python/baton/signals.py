"""Token ids, digests, names and signals over HTTP (docs/protocol.md sections 2 and 5)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

MAX_PAYLOAD_BYTES = 1 << 20
MAX_NAME_BYTES = 200
ZERO_ID = "0" * 32

_ID = re.compile(r"^[0-9a-f]{32}$")
_PROBLEM_BASE = "https://github.com/batonhq/baton/blob/main/docs/protocol.md#problem-"


class Header:
    TOKEN = "Baton-Token"
    CONVERSATION = "Baton-Conversation"
    CAUSATION = "Baton-Causation"
    TYPE = "Baton-Type"
    DESTINATION = "Baton-Destination"
    OUTCOME = "Baton-Outcome"
    IDEMPOTENCY_KEY = "Idempotency-Key"
    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"


class Outcome:
    APPLIED = "applied"
    REPLAYED = "replayed"
    DUPLICATE = "duplicate"
    IN_PROGRESS = "in-progress"


class ProblemType:
    """Problem types of answers to signals (section 5.2): the name after #problem-."""

    ALREADY_PROCESSED = "already-processed"
    IN_PROGRESS = "in-progress"
    MALFORMED = "malformed-signal"
    TOO_LARGE = "payload-too-large"
    MISADDRESSED = "misaddressed"
    EXPIRED = "expired"
    UNKNOWN_TYPE = "unknown-type"
    UNROUTABLE = "unroutable"
    DIGEST_MISMATCH = "digest-mismatch"
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"
    METHOD = "method-not-allowed"

    @staticmethod
    def uri(name: str) -> str:
        return _PROBLEM_BASE + name

    @staticmethod
    def name_of(uri: str) -> str:
        """The name of a problem type URI of this protocol, or '' for another URI."""
        return uri[len(_PROBLEM_BASE):] if uri.startswith(_PROBLEM_BASE) else ""


@dataclass
class Problem:
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str = ""
    token: str = ""

    def to_json(self) -> bytes:
        doc = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            doc["detail"] = self.detail
        if self.token:
            doc["token"] = self.token
        return json.dumps(doc).encode()

    @staticmethod
    def from_json(body: bytes, status: int) -> Optional["Problem"]:
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
            return None
        return Problem(type=doc["type"], title=str(doc.get("title", "")), status=status,
                       detail=str(doc.get("detail", "")), token=str(doc.get("token", "")))


class SignalError(ValueError):
    """A signal or one of its parts is malformed (section 2, 5.1)."""


def new_token_id() -> str:
    """A fresh token id: 128 bits from the operating system's CSPRNG."""
    while True:
        tid = secrets.token_hex(16)
        if tid != ZERO_ID:
            return tid


def is_token_id(s: object) -> bool:
    return isinstance(s, str) and _ID.fullmatch(s) is not None


def digest_of(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def check_id(what: str, value: str, allow_zero: bool = False) -> str:
    if not is_token_id(value):
        raise SignalError(f"{what} {value!r} is not 32 lowercase hex digits")
    if value == ZERO_ID and not allow_zero:
        raise SignalError(f"{what} is the all-zero id, which is no token's id")
    return value


def check_name(what: str, name: str) -> str:
    raw = name.encode("utf-8", "surrogatepass") if isinstance(name, str) else b""
    if not raw:
        raise SignalError(f"missing {what}")
    if len(raw) > MAX_NAME_BYTES:
        raise SignalError(f"{what} of {len(raw)} bytes exceeds {MAX_NAME_BYTES}")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in name):
        raise SignalError(f"{what} {name!r} contains a space or a control character")
    return name


@dataclass
class Signal:
    """A signal: its token id, conversation, causation ('' for a root), destination, type and payload."""

    id: str
    conversation: str
    destination: str
    type: str
    payload: bytes = b""
    causation: str = ""
    traceparent: str = ""
    tracestate: str = ""

    def digest(self) -> str:
        return digest_of(self.payload)

    def validate(self) -> None:
        check_id("token id", self.id)
        check_id("conversation", self.conversation)
        if self.causation:
            check_id("causation", self.causation)
        check_name("destination", self.destination)
        check_name("type", self.type)
        if len(self.payload) > MAX_PAYLOAD_BYTES:
            raise SignalError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")

    def token(self, created_at: str = "") -> dict:
        """The token that authorises this signal, as the token service reads it."""
        tok = {"id": self.id, "conversation": self.conversation, "destination": self.destination,
               "type": self.type, "digest": self.digest()}
        if self.causation:
            tok["causation"] = self.causation
        if created_at:
            tok["created_at"] = created_at
        return tok


def encode_signal(sig: Signal) -> dict:
    """The headers of the request that carries sig (section 5.1); the body is sig.payload."""
    sig.validate()
    headers = {
        Header.TOKEN: sig.id,
        Header.CONVERSATION: sig.conversation,
        Header.TYPE: sig.type,
        Header.DESTINATION: sig.destination,
        Header.IDEMPOTENCY_KEY: f'"{sig.id}"',
        "Content-Type": "application/octet-stream",
    }
    if sig.causation:
        headers[Header.CAUSATION] = sig.causation
    if _valid_traceparent(sig.traceparent):
        headers[Header.TRACEPARENT] = sig.traceparent
        if sig.tracestate and _valid_tracestate(sig.tracestate):
            headers[Header.TRACESTATE] = sig.tracestate
    return headers


def decode_signal(headers: Mapping[str, Sequence[str]], body: bytes) -> Signal:
    """The signal a request carries, checked as section 5.1 says.

    headers maps each lower-case header name to all its values, so that a
    repeated header is seen. A malformed request raises SignalError.
    """

    def single(name: str, required: bool) -> str:
        values = headers.get(name.lower(), [])
        if len(values) > 1 or any("," in v for v in values if name != Header.TRACESTATE):
            raise SignalError(f"header {name} appears more than once")
        if not values:
            if required:
                raise SignalError(f"header {name} is missing")
            return ""
        return values[0]

    token = check_id("Baton-Token", single(Header.TOKEN, True))
    sig = Signal(
        id=token,
        conversation=check_id("Baton-Conversation", single(Header.CONVERSATION, True)),
        causation=single(Header.CAUSATION, False),
        type=check_name("type", single(Header.TYPE, True)),
        destination=check_name("destination", single(Header.DESTINATION, True)),
        payload=body,
    )
    if sig.causation:
        check_id("Baton-Causation", sig.causation)
    key = single(Header.IDEMPOTENCY_KEY, False)
    if key and key.strip('"') != token:
        raise SignalError("Idempotency-Key differs from Baton-Token")
    parent = single(Header.TRACEPARENT, False)
    if _valid_traceparent(parent):
        sig.traceparent = parent
        state = headers.get(Header.TRACESTATE, [""])
        if len(state) == 1 and _valid_tracestate(state[0]):
            sig.tracestate = state[0]
    return sig


def token_of_header(headers: Mapping[str, Sequence[str]]) -> str:
    """The request's Baton-Token if it is one well-formed id (the all-zero id included), else ''."""
    values = headers.get(Header.TOKEN.lower(), [])
    return values[0] if len(values) == 1 and is_token_id(values[0]) else ""


_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def _valid_traceparent(s: str) -> bool:
    m = _TRACEPARENT.match(s or "")
    return bool(m) and m.group(1) != "0" * 32 and m.group(2) != "0" * 16


def _valid_tracestate(s: str) -> bool:
    return len(s) <= 512 and all(0x20 <= ord(c) < 0x7F for c in s)
