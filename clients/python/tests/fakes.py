"""Fakes for the unit tests: a token service in memory with switchable failures."""

from __future__ import annotations

import datetime
import threading
from typing import Dict, List, Optional

from baton import TokenServiceError


class FakeTokens:
    """Behaves as TokenServiceClient over one destination's view of a token store."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self.live: Dict[str, dict] = {}
        self.fail: Optional[TokenServiceError] = None  # every call fails with it
        self.fail_transitions: Optional[TokenServiceError] = None
        self.transitions = 0
        # Calls that named no conversation: a service over a store split by
        # conversation would have asked every part for them.
        self.unrouted = 0
        self._lock = threading.Lock()

    def add(self, token: dict) -> None:
        self.live[token["id"]] = dict(token)

    def _check(self) -> None:
        if self.fail:
            raise self.fail

    def _routed(self, tok: Optional[dict], conversation: str) -> Optional[dict]:
        """Counts the calls that name no conversation."""
        if not conversation:
            self.unrouted += 1
        return tok

    def get(self, token_id: str, conversation: str = "") -> dict:
        self._check()
        with self._lock:
            tok = self._routed(self.live.get(token_id), conversation)
        if tok is None:
            raise TokenServiceError("not found", 404, "not-found", True)
        if tok["destination"] != self.destination:
            raise TokenServiceError("not your token", 403, "not-your-token", True)
        return dict(tok)

    def claim(self, token_id: str, conversation: str = "") -> dict:
        tok = self.get(token_id, conversation)
        if tok.get("expires_at"):
            if datetime.datetime.fromisoformat(tok["expires_at"]) <= datetime.datetime.now(datetime.timezone.utc):
                raise TokenServiceError("expired", 410, "expired", True)
            with self._lock:
                self.live[token_id].pop("expires_at", None)
        return tok

    def transition(self, consume: str, create: List[dict], conversation: str = "") -> bool:
        self._check()
        if self.fail_transitions:
            raise self.fail_transitions
        with self._lock:
            self.transitions += 1
            if self._routed(self.live.get(consume), conversation) is None:
                return False
            del self.live[consume]
            for t in create:
                self.live[t["id"]] = dict(t)
            return True


def unavailable() -> TokenServiceError:
    return TokenServiceError("store down", 503, "not-applied", True)
