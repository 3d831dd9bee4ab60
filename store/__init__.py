"""seqstore: user behaviour sequences in HBase, read "as of" a point in time.

Importing this package opens no socket. The public names are listed in ``__all__``.
"""

from store.config import Config, Endpoint
from store.errors import ConfigError, SeqStoreError, StoreUnavailableError

__all__ = ["Config", "ConfigError", "Endpoint", "SeqStoreError", "StoreUnavailableError"]
__version__ = "0.1.0"
