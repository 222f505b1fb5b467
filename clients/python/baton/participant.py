"""A participant: runs docs/protocol.md section 3.2 with the token service as its token store.

Framework neutral: Participant.handle takes a request's method, headers and
body and returns an Answer (status, headers, body); baton.adapters puts it
behind http.server or WSGI. Section 3.7 says what to answer when the token
service fails; every such failure is answered 503 so that the sender
retries, except those that prove the signal itself is wrong.
"""

from __future__ import annotations

import base64
import copy
import datetime
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from .entities import Entity, EntityStore, VersionConflict
from .sender import NotDelivered, Refused, Sender
from .signals import (
    MAX_PAYLOAD_BYTES,
    Header,
    Outcome,
    Problem,
    ProblemType,
    Signal,
    SignalError,
    decode_signal,
    new_token_id,
    token_of_header,
)
from .tokens import TokenServiceClient, TokenServiceError

_COMMIT_ATTEMPTS = 10


@dataclass
class Emit:
    """A signal an activity asks to send; the participant gives it a token id, conversation and causation."""

    destination: str
    type: str
    payload: bytes = b""


@dataclass
class Effects:
    """What an activity returns: signals to emit and a reply. It changes the state it is given in place."""

    emit: List[Emit] = field(default_factory=list)
    reply: bytes = b""
    reply_type: str = "application/json"


class Permanent(Exception):
    """Raised by an activity that can never succeed for this signal: it is refused (422 rejected).

    Its message stays in the participant's log: it may name what the sender
    must not see. Raise Refusal for a reason meant for the sender.
    """


class Refusal(Permanent):
    """A Permanent whose message is for the sender: the 422 answer's detail (a form's "quantity must be 1 to 10")."""


@dataclass
class Answer:
    status: int
    headers: Dict[str, str]
    body: bytes = b""


@dataclass
class _Activity:
    entity: Callable[[Signal], str]
    handle: Callable[[Signal, dict], Effects]


class Participant:
    """Processes the signals of one destination exactly once.

    tokens is the token service client with this destination's key;
    entities keeps each entity's state and outbox; sender delivers the
    signals activities emit (None if they emit none). One process per
    entity store (FileEntityStore's compare-and-set is per process).
    """

    def __init__(self, destination: str, tokens: TokenServiceClient, entities: EntityStore,
                 sender: Optional[Sender] = None, max_body: int = MAX_PAYLOAD_BYTES,
                 sweep_after: float = 5.0, log: Optional[logging.Logger] = None) -> None:
        self.destination = destination
        self.tokens = tokens
        self.entities = entities
        self.sender = sender
        self.max_body = min(max_body, MAX_PAYLOAD_BYTES)
        self.sweep_after = sweep_after
        self.log = log or logging.getLogger("baton.participant")
        self._activities: Dict[str, _Activity] = {}
        self._locks_guard = threading.Lock()
        self._locks: Dict[str, list] = {}  # name -> [lock, users]

    def activity(self, type: str, entity: Callable[[Signal], str], handle: Callable[[Signal, dict], Effects]) -> None:
        """Registers the activity for signals of type: entity names the entity a signal acts on,
        handle changes its state in place and returns the Effects."""
        self._activities[type] = _Activity(entity, handle)

    # The request, section 5.

    def handle(self, method: str, headers: Mapping[str, Sequence[str]], read_body: Callable[[int], bytes],
               content_length: Optional[int]) -> Answer:
        """Answers one request. headers maps lower-case names to all their values; read_body(n) reads
        at most n bytes of the body."""
        token = token_of_header(headers)
        if method != "POST":
            answer = _problem(405, ProblemType.METHOD, "Method Not Allowed", "signals are POSTed", token)
            answer.headers["Allow"] = "POST"
            return answer
        if content_length is not None and content_length > self.max_body:
            return _problem(413, ProblemType.TOO_LARGE, "Payload Too Large", f"the body exceeds {self.max_body} bytes", token)
        body = read_body(self.max_body + 1)
        if len(body) > self.max_body:
            return _problem(413, ProblemType.TOO_LARGE, "Payload Too Large", f"the body exceeds {self.max_body} bytes", token)
        try:
            sig = decode_signal(headers, body)
        except SignalError as err:
            return _problem(400, ProblemType.MALFORMED, "Malformed Signal", str(err), token)
        return self.process(sig)

    # The algorithm, section 3.2.

    def process(self, sig: Signal) -> Answer:
        if sig.destination != self.destination:
            return _problem(403, ProblemType.MISADDRESSED, "Misaddressed",
                            f"signal for {sig.destination!r} arrived at {self.destination!r}", sig.id)
        act = self._activities.get(sig.type)
        if act is None:
            return _problem(404, ProblemType.UNKNOWN_TYPE, "Unknown Type", f"no activity for {sig.type!r}", sig.id)
        try:
            key = act.entity(sig)
        except Exception as err:  # the signal maps to no entity
            return _problem(422, ProblemType.UNROUTABLE, "Unroutable", str(err), sig.id)
        # Copies of one signal, and signals of one entity, take turns in
        # this process: a later copy finds the first one's outcome.
        with self._locked("token:" + sig.id), self._locked("entity:" + key):
            for _ in range(_COMMIT_ATTEMPTS):
                answer = self._attempt(sig, key, act)
                if answer is not None:
                    return answer
        return _unavailable(sig.id, "version conflicts did not settle")

    def _attempt(self, sig: Signal, key: str, act: _Activity) -> Optional[Answer]:
        """One pass of steps 1 to 8; None on a version conflict."""
        ent = self.entities.load(key)  # step 1, before the token is read
        entry = ent.entry(sig.id)
        if entry is not None:  # step 2
            refusal = _same_as_entry(entry, sig)
            return refusal or self._finish(ent, entry, Outcome.REPLAYED)
        try:
            tok = self.tokens.get(sig.id, sig.conversation)  # step 3
        except TokenServiceError as err:
            return self._token_failure(err, sig)
        refusal = self._admit(tok, sig)
        if refusal:
            return refusal
        if tok.get("expires_at"):
            try:
                self.tokens.claim(sig.id, sig.conversation)
            except TokenServiceError as err:
                return self._token_failure(err, sig)
        state = copy.deepcopy(ent.state)  # step 4
        try:
            effects = act.handle(sig, state) or Effects()
        except Refusal as err:
            return _problem(422, ProblemType.REJECTED, "Rejected", str(err), sig.id)
        except Permanent as err:
            self.log.info("activity %s refused signal %s for good: %s", sig.type, sig.id, err)
            return _problem(422, ProblemType.REJECTED, "Rejected", "the activity refused the signal for good", sig.id)
        except Exception as err:
            self.log.warning("activity %s failed; the signal will be retried: %s", sig.type, err)
            return _unavailable(sig.id, "the activity failed for now")
        children = [{"id": new_token_id(), "destination": e.destination, "type": e.type,
                     "payload": base64.b64encode(e.payload).decode()} for e in effects.emit]
        entry = {"id": sig.id, "conversation": sig.conversation, "causation": sig.causation,
                 "destination": sig.destination, "type": sig.type, "digest": sig.digest(),
                 "signals": children, "reply": base64.b64encode(effects.reply).decode(),
                 "reply_type": effects.reply_type, "created_at": time.time()}
        loaded = ent.version
        ent.state, ent.outbox = state, ent.outbox + [entry]
        try:
            self.entities.commit(ent, loaded)
        except VersionConflict:
            return None
        ent.version = loaded + 1
        return self._finish(ent, entry, Outcome.APPLIED)

    def _token_failure(self, err: TokenServiceError, sig: Signal) -> Answer:
        """What a failing token service call at step 3 means for the signal (section 3.7)."""
        if err.status == 404:
            return _duplicate(sig.id)
        if err.status == 410:
            return _problem(410, ProblemType.EXPIRED, "Expired", "the root token expired before it was claimed", sig.id)
        if err.status == 403 and err.problem == "not-your-token":
            return _problem(403, ProblemType.MISADDRESSED, "Misaddressed", "the token is addressed to another destination", sig.id)
        if err.status in (400, 401, 403):
            self.log.error("the token service refuses this participant (%s): check its key and code", err)
        return _unavailable(sig.id, "the token service is unavailable")

    def _admit(self, tok: dict, sig: Signal) -> Optional[Answer]:
        """Step 3's admission checks, in the order of the protocol."""
        if tok.get("destination") != self.destination:
            return _problem(403, ProblemType.MISADDRESSED, "Misaddressed", "the token is addressed to another destination", sig.id)
        if (tok.get("type"), tok.get("conversation"), tok.get("causation", "")) != (sig.type, sig.conversation, sig.causation):
            return _problem(422, ProblemType.REJECTED, "Rejected", "the signal differs from its token", sig.id)
        if tok.get("digest") != sig.digest():
            return _problem(422, ProblemType.DIGEST_MISMATCH, "Digest Mismatch", "the payload differs from the token's digest", sig.id)
        expires = tok.get("expires_at")
        if expires and datetime.datetime.now(datetime.timezone.utc) >= datetime.datetime.fromisoformat(expires):
            return _problem(410, ProblemType.EXPIRED, "Expired", "the root token expired", sig.id)
        return None

    def _finish(self, ent: Entity, entry: dict, outcome: str) -> Answer:
        """Steps 5 to 8 for an outbox entry that is committed."""
        children = [Signal(id=c["id"], conversation=entry["conversation"], causation=entry["id"],
                           destination=c["destination"], type=c["type"], payload=base64.b64decode(c["payload"]))
                    for c in entry["signals"]]
        reply = _reply(entry, outcome)
        try:  # step 5
            self.tokens.transition(entry["id"], [c.token() for c in children], entry.get("conversation", ""))
        except TokenServiceError as err:
            if err.unavailable:
                return _unavailable(entry["id"], "the activity is applied; its transition is not done yet")
            self.log.error("the token service refused the transition of %s for good (%s): its outbox entry stays for an operator",
                           entry["id"], err)
            return reply
        for child in children:  # step 6
            try:
                if self.sender is None:
                    raise Refused(0, None)
                self.sender.send(child)
            except NotDelivered:
                return _unavailable(entry["id"], "the activity is applied; its signals are not all delivered yet")
            except Refused as err:
                self.log.error("signal %s to %s was refused for good (%s): its outbox entry stays for an operator",
                               child.id, child.destination, err)
                return reply
        self._remove(ent, entry["id"])  # step 7
        return reply  # step 8

    def _remove(self, ent: Entity, token_id: str) -> None:
        for _ in range(_COMMIT_ATTEMPTS):
            if ent.entry(token_id) is None:
                return
            loaded = ent.version
            ent.outbox = [e for e in ent.outbox if e["id"] != token_id]
            try:
                self.entities.commit(ent, loaded)
                return
            except VersionConflict:
                ent = self.entities.load(ent.key)
        self.log.warning("outbox entry %s not removed; the sweeper will", token_id)

    # The sweeper, section 3.4.

    def sweep(self) -> int:
        """Finishes outbox entries older than sweep_after that nobody drives; returns how many."""
        finished = 0
        cutoff = time.time() - self.sweep_after
        for ent in self.entities.with_outbox():
            for entry in list(ent.outbox):
                if entry["created_at"] > cutoff:
                    continue
                with self._locked("token:" + entry["id"]), self._locked("entity:" + ent.key):
                    fresh = self.entities.load(ent.key)
                    current = fresh.entry(entry["id"])
                    if current is not None and self._finish(fresh, current, Outcome.REPLAYED).status == 200:
                        finished += 1
        return finished

    def start_sweeper(self, interval: float = 1.0) -> threading.Event:
        """Sweeps every interval seconds in a daemon thread until the returned event is set."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    self.sweep()
                except Exception as err:  # keep sweeping; the next pass retries
                    self.log.warning("sweep failed: %s", err)

        threading.Thread(target=loop, name="baton-sweeper", daemon=True).start()
        return stop

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        with self._locks_guard:
            slot = self._locks.setdefault(name, [threading.Lock(), 0])
            slot[1] += 1
        try:
            with slot[0]:
                yield
        finally:
            with self._locks_guard:
                slot[1] -= 1
                if slot[1] == 0:
                    del self._locks[name]


def _same_as_entry(entry: dict, sig: Signal) -> Optional[Answer]:
    """Step 2: only the very signal an outbox entry records may drive it."""
    if (entry["conversation"], entry["causation"], entry["destination"], entry["type"]) != \
            (sig.conversation, sig.causation, sig.destination, sig.type):
        return _problem(422, ProblemType.REJECTED, "Rejected", "the signal differs from the one that was processed", sig.id)
    if entry["digest"] != sig.digest():
        return _problem(422, ProblemType.DIGEST_MISMATCH, "Digest Mismatch", "the payload differs from the one processed", sig.id)
    return None


def _headers(token: str, outcome: str = "") -> Dict[str, str]:
    h = {"Cache-Control": "no-store"}
    if token:
        h[Header.TOKEN] = token
    if outcome:
        h[Header.OUTCOME] = outcome
    return h


def _reply(entry: dict, outcome: str) -> Answer:
    h = _headers(entry["id"], outcome)
    h["Content-Type"] = entry.get("reply_type") or "application/octet-stream"
    return Answer(200, h, base64.b64decode(entry["reply"]))


def _problem(status: int, kind: str, title: str, detail: str, token: str, outcome: str = "") -> Answer:
    h = _headers(token, outcome)
    h["Content-Type"] = "application/problem+json"
    if status == 503 or outcome == Outcome.IN_PROGRESS:
        h["Retry-After"] = "1"
    return Answer(status, h, Problem(ProblemType.uri(kind), title, status, detail, token).to_json())


def _duplicate(token: str) -> Answer:
    return _problem(409, ProblemType.ALREADY_PROCESSED, "Already Processed",
                    "the token is not live: the signal was processed before, or never issued", token, Outcome.DUPLICATE)


def _unavailable(token: str, detail: str) -> Answer:
    return _problem(503, ProblemType.UNAVAILABLE, "Unavailable", detail, token)
