"""The participant behind Python's http.server, or as a WSGI application."""

from __future__ import annotations

import http.server
from typing import Callable, Dict, Iterable, List

from .participant import Participant

_REASONS = {s.value: s.phrase for s in http.HTTPStatus}

# The most of a refused body that is read and discarded, so that its sender
# reads the answer instead of a reset connection.
_DRAIN_LIMIT = 4 << 20


def request_handler(participant: Participant) -> type:
    """A BaseHTTPRequestHandler class that answers every request with the participant;
    serve it with http.server.ThreadingHTTPServer."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            headers: Dict[str, List[str]] = {}
            for name, value in self.headers.items():
                headers.setdefault(name.lower(), []).append(value.strip())
            length = self.headers.get("Content-Length")
            content_length = int(length) if length and length.isdigit() else None
            remaining = content_length or 0

            def read_body(n: int) -> bytes:
                nonlocal remaining
                data = self.rfile.read(min(n, remaining)) if remaining else b""
                remaining -= len(data)
                return data

            answer = participant.handle(self.command, headers, read_body, content_length)
            if remaining and remaining <= _DRAIN_LIMIT:
                # Read what the sender is still sending, so that it reads the answer.
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            if remaining:  # not worth reading: the connection cannot be reused
                self.close_connection = True
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer.body)

        do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

        def log_message(self, format: str, *args) -> None:  # the participant logs what matters
            pass

    return Handler


def wsgi_app(participant: Participant) -> Callable:
    """A WSGI application that answers every request with the participant.

    WSGI joins repeated headers with commas; a comma in a Baton header is
    therefore read as a repeated header and refused, as section 5.1 asks.
    """

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        headers: Dict[str, List[str]] = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").lower()] = [value]
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = [environ["CONTENT_TYPE"]]
        length = environ.get("CONTENT_LENGTH") or ""
        content_length = int(length) if length.isdigit() else None
        stream = environ["wsgi.input"]
        remaining = content_length or 0

        def read_body(n: int) -> bytes:
            nonlocal remaining
            data = stream.read(min(n, remaining)) if remaining else b""
            remaining -= len(data)
            return data

        answer = participant.handle(environ.get("REQUEST_METHOD", "GET"), headers, read_body, content_length)
        status = f"{answer.status} {_REASONS.get(answer.status, '')}".strip()
        start_response(status, list(answer.headers.items()) + [("Content-Length", str(len(answer.body)))])
        return [answer.body]

    return app
