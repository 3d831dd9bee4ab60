"""Ray jobs over the store (backfill, scoring, export), the Ray Data integration and the
``seqstore`` CLI: they need the ``jobs`` extra (``pip install 'seqstore[jobs]'``).

Importing this package does not import Ray; each job imports it when it runs.
"""

from importlib.util import find_spec

_MISSING = [name for name in ("ray", "tqdm", "happybase") if find_spec(name) is None]
if _MISSING:
    raise ImportError(f"seqstore's jobs and CLI need {', '.join(_MISSING)}: pip install 'seqstore[jobs]' "
                      "(the store alone, `import store`, does not)")

__all__: list[str] = []
