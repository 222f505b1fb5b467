"""A client of the token service HTTP API (docs/protocol.md section 8)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Dict, List, Optional, Union

from .signals import ZERO_ID, is_token_id

_PROBLEM_BASE = "https://github.com/batonhq/baton/blob/main/docs/token-service.md#problem-"

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer: urllib would follow it with every header, the API key included, to any host."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())

Token = Dict[str, str]
"""A token as the API reads and writes it: id, conversation, causation, destination, type, digest, created_at, expires_at."""

MAX_BATCH = 100
"""The most items the service takes in one batch request; read_tokens and transition_batch send more in several."""


class TokenServiceError(Exception):
    """An error answer of the token service, or no answer.

    problem is the problem type's name (after #problem-) or ''. not_applied
    is True when the answer proves nothing was written: a problem type of
    a refusal, or, for an answer that is not a problem document (a proxy's
    page), 401, 403 or 413. Otherwise (500, a 502 from a proxy, a lost
    connection, an answer the client cannot read) the outcome is unknown.
    Retrying is safe either way. status is 0 when there is no answer, or
    none the client can read.
    """

    def __init__(self, message: str, status: int = 0, problem: str = "", not_applied: bool = False):
        super().__init__(message)
        self.status = status
        self.problem = problem
        self.not_applied = not_applied

    @property
    def not_found(self) -> bool:
        return self.status == 404 and self.problem in ("not-found", "")

    @property
    def unavailable(self) -> bool:
        """Worth retrying later: no (readable) answer, a 5xx, or credentials or a request the operator must fix."""
        return self.status == 0 or self.status >= 500 or self.status in (400, 401)


@dataclass
class TokenServiceClient:
    """Calls the token service at base_url with an API key; timeout bounds each call in seconds.

    It follows no redirect: a redirect is an error answer of unknown outcome.
    """

    base_url: str
    api_key: str
    timeout: float = 10.0
    user_agent: str = "baton-client-python"

    def issue_root(self, root: Token) -> Token:
        """Issues a root token; the service chooses its id (and the conversation when root names none)."""
        return self._call("POST", "/v1/roots", root, want=201)

    # conversation, in get, claim and transition, is the conversation of the
    # token named (the signal's), sent as the Baton-Conversation header: a
    # service whose token store is split by conversation then asks one part.

    def get(self, token_id: str, conversation: str = "") -> Token:
        """The live token; TokenServiceError with status 404 when it is not live.

        The zero id, which no token has, is answered so without asking the
        service (as the Go client answers it), which would refuse it as
        malformed.
        """
        if token_id == ZERO_ID:
            raise TokenServiceError(f"token service GET /v1/tokens/{token_id}: 404 not-found the zero id is no token's; not sent",
                                    status=404, problem="not-found", not_applied=True)
        return self._call("GET", "/v1/tokens/" + _segment(token_id), None, want=200, conversation=conversation)

    def claim(self, token_id: str, conversation: str = "") -> Token:
        """Claims an expiring root so that it no longer expires (404 gone, 410 expired)."""
        return self._call("POST", f"/v1/tokens/{_segment(token_id)}/claim", None, want=200, conversation=conversation)

    def transition(self, consume: str, create: List[Token], conversation: str = "") -> bool:
        """Consumes a token and creates its children in one step; False if it was not live."""
        answer = self._call("POST", "/v1/transitions", {"consume": consume, "create": create}, want=200,
                            conversation=conversation)
        return bool(answer.get("consumed"))

    def read_tokens(self, ids: List[str], conversations: Optional[List[str]] = None) -> List[Union[Token, None, TokenServiceError]]:
        """Reads many tokens, up to MAX_BATCH in one request (POST /v1/tokens/read).

        For each id, in order: the live token, None when it is not live, or
        the TokenServiceError that get would raise for it alone.
        conversations, if given, names each token's conversation ('' where
        not known), as get's conversation does. An error of a whole request
        is raised.

        Only well-formed ids are sent: the service refuses a whole request
        that names a malformed one, every other id of it with it. The zero
        id reads as None, as get answers it; an id that is not 32 lowercase
        hex digits as the error get gets for it, 400 invalid-request
        (not_applied).
        """
        if conversations is not None and len(conversations) != len(ids):
            raise ValueError(f"read_tokens: {len(conversations)} conversations for {len(ids)} ids: give one for each ('' where not known)")
        results: List[Union[Token, None, TokenServiceError]] = [None] * len(ids)
        send = []  # indexes into ids
        for i, token_id in enumerate(ids):
            if token_id == ZERO_ID:
                continue
            if is_token_id(token_id):
                send.append(i)
            else:
                results[i] = TokenServiceError(
                    f"token service POST /v1/tokens/read: 400 invalid-request {token_id!r} is not a token id "
                    "(32 lowercase hex digits); not sent", status=400, problem="invalid-request", not_applied=True)
        for start in range(0, len(send), MAX_BATCH):
            part = send[start:start + MAX_BATCH]
            hints = None if conversations is None else [conversations[i] for i in part]
            answer = self._call("POST", "/v1/tokens/read", {"ids": [ids[i] for i in part]}, want=200, conversations=hints)
            for i, result in zip(part, _results(answer, len(part), "/v1/tokens/read")):
                if "token" in result:
                    results[i] = result["token"]
                else:
                    err = _problem_error("POST", "/v1/tokens/read", result.get("problem"))
                    results[i] = None if err.not_found else err
        return results

    def transition_batch(self, transitions: List[dict]) -> List[Union[bool, TokenServiceError]]:
        """Runs many transitions, up to MAX_BATCH in one request (POST /v1/transitions/batch).

        Each is a dict with consume, create (a list of tokens) and
        optionally conversation (the consumed token's), and is applied on
        its own, as transition would apply it. For each, in order: whether
        it consumed its token, or the TokenServiceError that transition
        would raise for it alone. The error of the first request is raised:
        it is the whole call's (nothing of the call was applied when it is
        not_applied). The error of a later request, sent after earlier ones
        were applied, is each of its transitions' result instead, as in the
        Go client. A request the service finds too large (413: it ran
        nothing) is sent again in halves, down to single transitions; after
        such a split, a half's error is each of its transitions' result,
        and a transition too large alone keeps its 413. ValueError, before
        any request is sent, if a token appears twice in the batch:
        consumed twice, or created with the id of a token another
        transition (or the same) consumes or creates.
        """
        _check_distinct_tokens(transitions)
        results: List[Union[bool, TokenServiceError]] = []
        for start in range(0, len(transitions), MAX_BATCH):
            part = transitions[start:start + MAX_BATCH]
            try:
                results.extend(self._transition_parts(part))
            except TokenServiceError as err:
                # Raising after earlier requests were applied would lose
                # their results, and a not_applied error would say none was.
                if start == 0:
                    raise
                results.extend([err] * len(part))
        return results

    def _transition_parts(self, part: List[dict]) -> List[Union[bool, TokenServiceError]]:
        """Runs part in one request, or, when the service finds it too large (413: it ran nothing), in two halves.

        Each half the same way: a batch of transitions with many children
        can exceed the service's --max-body where each transition alone
        fits. Raises the error of part's request; after a split, a half's
        error is each of its transitions' result instead, as in the Go
        client.
        """
        try:
            return self._transition_request(part)
        except TokenServiceError as err:
            if len(part) < 2 or err.status != 413:
                raise
        results: List[Union[bool, TokenServiceError]] = []
        middle = len(part) // 2
        for half in (part[:middle], part[middle:]):
            try:
                results.extend(self._transition_parts(half))
            except TokenServiceError as err:
                results.extend([err] * len(half))
        return results

    def _transition_request(self, part: List[dict]) -> List[Union[bool, TokenServiceError]]:
        """Runs part in one request; raises the request's error."""
        body = {"transitions": [{"consume": t["consume"], "create": list(t.get("create", []))} for t in part]}
        hints = [t.get("conversation", "") for t in part]
        answer = self._call("POST", "/v1/transitions/batch", body, want=200, conversations=hints)
        return [bool(result["consumed"]) if "consumed" in result
                else _problem_error("POST", "/v1/transitions/batch", result.get("problem"))
                for result in _results(answer, len(part), "/v1/transitions/batch")]

    def list_by_conversation(self, conversation: str, after: str = "", limit: int = 0) -> dict:
        return self._call("GET", "/v1/conversations/" + _segment(conversation) + "/tokens" + _page(after, limit), None, want=200)

    def list_by_destination(self, destination: str, after: str = "", limit: int = 0) -> dict:
        path = "/v1/destinations/" + _segment(destination) + "/tokens"
        return self._call("GET", path + _page(after, limit), None, want=200)

    def _call(self, method: str, path: str, body: Optional[dict], want: int, conversation: str = "",
              conversations: Optional[List[str]] = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url.rstrip("/") + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.api_key)
        req.add_header("User-Agent", self.user_agent)
        req.add_header("Accept", "application/json")
        if conversation:
            req.add_header("Baton-Conversation", conversation)
        if conversations is not None and any(conversations):
            req.add_header("Baton-Conversations", ",".join(conversations))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:
                payload = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            payload = err.read()
            status = err.code
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            raise TokenServiceError(f"token service {method} {path}: no answer: {err}") from err
        if status == want:
            try:
                return json.loads(payload) if payload else {}
            except ValueError as err:
                raise _unreadable(method, path, f"{len(payload)} bytes that are not JSON") from err
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = None
        raise _problem_error(method, path, doc, status)


def _problem_error(method: str, path: str, doc, status: int = 0) -> TokenServiceError:
    """The TokenServiceError of a problem document (an answer's, or one item's of a batch)."""
    problem, detail = "", ""
    if isinstance(doc, dict):
        problem = str(doc.get("type", ""))
        problem = problem[len(_PROBLEM_BASE):] if problem.startswith(_PROBLEM_BASE) else ""
        detail = str(doc.get("detail", ""))
        if isinstance(doc.get("status"), int) and not status:
            status = doc["status"]
    not_applied = problem in _REFUSALS if problem else status in (401, 403, 413)
    return TokenServiceError(f"token service {method} {path}: {status} {problem} {detail}".strip(),
                             status=status, problem=problem, not_applied=not_applied)


def _check_distinct_tokens(transitions: List[dict]) -> None:
    """Raises ValueError if a token appears twice in a batch of transitions, to consume or to create.

    The service checks this within one request only; checked across all
    requests before any is sent, a bad batch is refused whole, as the Go
    client refuses it.
    """
    seen: Dict[str, int] = {}  # token id: the transition that names it
    for k, t in enumerate(transitions):
        for token_id in [t["consume"]] + [child.get("id") for child in t.get("create", [])]:
            if token_id is None:
                continue  # a child without an id: the service refuses its transition alone
            if token_id in seen:
                raise ValueError(f"transition_batch: token {token_id} appears twice in the batch "
                                 f"(transitions {seen[token_id]} and {k}); nothing was sent")
            seen[token_id] = k


def _results(answer, n: int, path: str) -> List[dict]:
    """The results of a batch answer, one for each of its n items."""
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != n or not all(isinstance(r, dict) for r in results):
        raise _unreadable("POST", path, f"no result for each of {n} items")
    return results


def _unreadable(method: str, path: str, why: str) -> TokenServiceError:
    """The error of an answer the client cannot read.

    Whatever the call did, a transition's included, its outcome is unknown
    (not_applied False); its status is 0, as for no answer, so that it is
    unavailable: worth retrying.
    """
    return TokenServiceError(f"token service {method} {path}: unreadable answer: {why}")


# Problem types whose answer proves that nothing was written (as the Go
# client maps them): refusals, and a route the service does not have.
_REFUSALS = frozenset({
    "invalid-request", "unauthorized", "forbidden", "not-your-token", "not-a-child", "not-found",
    "token-exists", "expired", "body-too-large", "unsupported-media-type", "not-applied",
    "no-such-route", "method-not-allowed",
})


def _segment(value: str) -> str:
    """One path segment: an id from a signal's header must not reach another route ("x/claim", "..")."""
    return urllib.parse.quote(value, safe="")


def _page(after: str, limit: int) -> str:
    query = {}
    if after:
        query["after"] = after
    if limit:
        query["limit"] = str(limit)
    return "?" + urllib.parse.urlencode(query) if query else ""
