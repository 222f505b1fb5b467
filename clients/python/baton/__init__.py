"""baton for Python: take part in baton conversations with the standard library only.

- signals: token ids, digests, names, and signals over HTTP (docs/protocol.md sections 2 and 5).
- tokens: a client of the token service (section 8).
- sender: sends signals with the retry rules of section 5.6.
- participant: runs section 3.2 with the token service as token store, framework neutral.
- adapters: the participant behind http.server or WSGI.
- entities: entity stores for the participant (in memory, or one JSON file per entity).
"""

from .signals import (
    MAX_NAME_BYTES,
    MAX_PAYLOAD_BYTES,
    Outcome,
    Problem,
    ProblemType,
    Signal,
    SignalError,
    decode_signal,
    digest_of,
    encode_signal,
    new_token_id,
)
from .tokens import MAX_BATCH, Token, TokenServiceClient, TokenServiceError
from .sender import Delivery, Refused, Sender, NotDelivered
from .entities import Entity, EntityStore, FileEntityStore, MemoryEntityStore, VersionConflict
from .participant import Answer, Effects, Emit, Participant, Permanent, Refusal

__all__ = [
    "Answer", "Delivery", "Effects", "Emit", "Entity", "EntityStore", "FileEntityStore",
    "MAX_BATCH", "MAX_NAME_BYTES", "MAX_PAYLOAD_BYTES", "MemoryEntityStore", "NotDelivered", "Outcome",
    "Participant", "Permanent", "Problem", "ProblemType", "Refusal", "Refused", "Sender", "Signal",
    "SignalError", "Token", "TokenServiceClient", "TokenServiceError", "VersionConflict",
    "decode_signal", "digest_of", "encode_signal", "new_token_id",
]
