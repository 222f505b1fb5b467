"""A participant in Python: billing's "charge" and the conformance kit's counting activity.

Configured from the environment, as `baton conformance --run` and the
cross-language e2e start it:

  BATON_TOKEN_SERVICE  base URL of the token service (required)
  BATON_API_KEY        this system's key there (required)
  BATON_DESTINATION    the destination served (default billing)
  BATON_ADDR           host:port to serve signals on (default 127.0.0.1:7480)
  BATON_DATA           directory of the entity files (default ./baton-python-data)
  BATON_FORWARD        DESTINATION=URL: the counting activity passes each signal on there

Run it from clients/python: python3 -m examples.participant
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from http.server import ThreadingHTTPServer

from baton import Effects, Emit, FileEntityStore, Participant, Permanent, Sender, TokenServiceClient
from baton.adapters import request_handler

COUNT = "conformance.count"


def build(env=os.environ) -> tuple:
    destination = env.get("BATON_DESTINATION", "billing")
    tokens = TokenServiceClient(env["BATON_TOKEN_SERVICE"], env["BATON_API_KEY"])
    forward_to, forward_url = "", ""
    if env.get("BATON_FORWARD"):
        forward_to, _, forward_url = env["BATON_FORWARD"].partition("=")
    sender = Sender({forward_to: forward_url}) if forward_to else None
    participant = Participant(destination, tokens, FileEntityStore(env.get("BATON_DATA", "baton-python-data")), sender)

    def entity_of(sig) -> str:
        try:
            entity = json.loads(sig.payload)["entity"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError('payload is not {"entity": name}') from err
        if not isinstance(entity, str) or not entity:
            raise ValueError('payload is not {"entity": name}')
        return "count/" + entity

    def count(sig, state: dict) -> Effects:
        state["count"] = state.get("count", 0) + 1
        emit = [Emit(forward_to, COUNT, sig.payload)] if forward_to else []
        return Effects(emit=emit, reply=json.dumps({"count": state["count"]}).encode())

    def account_of(sig) -> str:
        return "account/" + str(json.loads(sig.payload)["account"])

    def charge(sig, state: dict) -> Effects:
        try:
            c = json.loads(sig.payload)
            amount = int(c["amount"])
        except (ValueError, KeyError, TypeError) as err:
            raise Permanent('payload is not {"account", "amount"}') from err
        state["balance"] = state.get("balance", 0) + amount
        state["charges"] = state.get("charges", 0) + 1
        return Effects(reply=json.dumps({"account": c["account"], "balance": state["balance"], "charges": state["charges"]}).encode())

    participant.activity(COUNT, entity_of, count)
    participant.activity("charge", account_of, charge)
    return participant, env.get("BATON_ADDR", "127.0.0.1:7480")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        participant, addr = build()
    except KeyError as err:
        print(f"participant: {err.args[0]} is required", file=sys.stderr)
        return 2
    host, _, port = addr.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), request_handler(participant))
    server.daemon_threads = True
    stop_sweeping = participant.start_sweeper()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f"participant {participant.destination!r} serves signals at http://{addr}/signals", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop_sweeping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
