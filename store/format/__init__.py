"""Pure bytes <-> Arrow, no I/O: the key layout and column families (:mod:`.keys`), event
schemas (:mod:`.schema`), the raw-cell payload codec (:mod:`.payload`), the chunk cell format
(:mod:`.chunk`), fixed-size vectors (:mod:`.vectors`), content digests (:mod:`.digests`) and
the visibility rules every reader of stored events applies (:mod:`.visibility`).

May import only :mod:`store.errors`.
"""

from store.format import keys
from store.format.digests import content_digests
from store.format.keys import DAY_MS
from store.format.payload import PayloadCodec, payload_array
from store.format.schema import DEFAULT_SCHEMA, EventSchema, fields_from_json
from store.format.vectors import vector_array, vector_rows

__all__ = [
    "DAY_MS",
    "DEFAULT_SCHEMA",
    "EventSchema",
    "PayloadCodec",
    "content_digests",
    "fields_from_json",
    "keys",
    "payload_array",
    "vector_array",
    "vector_rows",
]
