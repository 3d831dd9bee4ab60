"""seqstore: user behaviour sequences in HBase, read "as of" a point in time.

Importing this package opens no socket. The public names are listed in ``__all__``.
"""

from store.arrays import to_numpy
from store.client import SequenceStore, SequenceTable
from store.config import Config, Endpoint
from store.errors import (
    ConfigError,
    HBaseError,
    InvalidEventError,
    InvalidRequestError,
    SchemaError,
    SeqStoreError,
    StoreClosedError,
    StoreUnavailableError,
    TableExistsError,
    TableNotFoundError,
)
from store.format.schema import DEFAULT_SCHEMA, EventSchema
from store.inputs.rows import Reason
from store.table.spec import TableSpec
from store.writer import ChunkLoad, WriteResult

__all__ = [
    "ChunkLoad",
    "DEFAULT_SCHEMA",
    "Config",
    "ConfigError",
    "Endpoint",
    "EventSchema",
    "HBaseError",
    "InvalidEventError",
    "InvalidRequestError",
    "Reason",
    "SchemaError",
    "SeqStoreError",
    "SequenceStore",
    "SequenceTable",
    "StoreClosedError",
    "StoreUnavailableError",
    "TableExistsError",
    "TableNotFoundError",
    "TableSpec",
    "WriteResult",
    "to_numpy",
]
__version__ = "0.1.0"
