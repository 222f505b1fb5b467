"""Sends signals over HTTP with the retry rules of docs/protocol.md section 5.6."""

from __future__ import annotations

import email.utils
import http.client
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

from .signals import Header, Outcome, Problem, ProblemType, Signal, encode_signal


@dataclass
class Delivery:
    """A delivered signal: status 200 with the receiver's reply, or 409 duplicate (no reply held)."""

    status: int
    outcome: str
    reply: bytes
    content_type: str


class Refused(Exception):
    """The receiver refused the signal for good (any other 4xx, or a redirect)."""

    def __init__(self, status: int, problem: Optional[Problem]):
        detail = f": {problem.detail}" if problem and problem.detail else ""
        kind = ProblemType.name_of(problem.type) if problem else ""
        super().__init__(f"signal refused with {status} {kind}{detail}".rstrip())
        self.status = status
        self.problem = problem


class NotDelivered(Exception):
    """The signal was not delivered before the deadline; the sender (or its sweeper) tries again later."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect is an answer, not a new request
        return None


@dataclass
class Sender:
    """Sends signals to the URL of their destination (endpoints), retrying as section 5.6 says.

    Each attempt is bounded by timeout seconds and all of them by deadline
    seconds; backoff starts at base_delay and doubles up to max_delay, with
    jitter, and a Retry-After answer sets the delay.
    """

    endpoints: Dict[str, str]
    timeout: float = 10.0
    deadline: float = 30.0
    base_delay: float = 0.1
    max_delay: float = 5.0
    sleep: Callable[[float], None] = time.sleep
    _opener: urllib.request.OpenerDirector = field(default_factory=lambda: urllib.request.build_opener(_NoRedirect()), repr=False)

    def send(self, sig: Signal) -> Delivery:
        url = self.endpoints.get(sig.destination)
        if not url:
            raise Refused(0, Problem(type="", title="no endpoint", status=0,
                                     detail=f"no endpoint for destination {sig.destination!r}"))
        headers = encode_signal(sig)
        give_up = time.monotonic() + self.deadline
        attempt = 0
        while True:
            attempt += 1
            status, answer_headers, body, failure = self._attempt(url, headers, sig.payload)
            outcome = answer_headers.get(Header.OUTCOME.lower(), "")
            content_type = answer_headers.get("content-type", "")
            problem = Problem.from_json(body, status) if content_type.startswith("application/problem+json") else None
            kind = ProblemType.name_of(problem.type) if problem else ""
            if failure is None:
                if 200 <= status < 300:
                    return Delivery(status, outcome or Outcome.APPLIED, body, content_type)
                if status == 409 and (outcome == Outcome.DUPLICATE or kind == ProblemType.ALREADY_PROCESSED):
                    return Delivery(status, Outcome.DUPLICATE, b"", "")
                in_progress = status == 409 and (outcome == Outcome.IN_PROGRESS or kind == ProblemType.IN_PROGRESS)
                if not (status >= 500 or status in (408, 429) or in_progress):
                    raise Refused(status, problem)
                failure = f"{status} {kind}".strip()
            delay = self._delay(attempt, answer_headers.get("retry-after", ""))
            if time.monotonic() + delay > give_up:
                raise NotDelivered(f"signal {sig.id} to {sig.destination}: not delivered after {attempt} attempts: {failure}")
            self.sleep(delay)

    def _attempt(self, url: str, headers: dict, payload: bytes):
        req = urllib.request.Request(url, data=payload, method="POST", headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.status, _lower(resp.headers), resp.read(), None
        except urllib.error.HTTPError as err:
            return err.code, _lower(err.headers), err.read(), None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            return 0, {}, b"", f"no answer: {err}"

    def _delay(self, attempt: int, retry_after: str) -> float:
        if retry_after:
            if retry_after.isdigit():
                return float(retry_after)
            try:
                when = email.utils.parsedate_to_datetime(retry_after)
                return max(0.0, when.timestamp() - time.time())
            except (TypeError, ValueError):
                pass
        limit = min(self.max_delay, self.base_delay * (2 ** min(attempt - 1, 10)))
        return limit / 2 + random.uniform(0, limit / 2)


def _lower(headers) -> Dict[str, str]:
    return {k.lower(): v for k, v in headers.items()} if headers else {}
