"""The store's vendored Thrift2 IDL is the pinned HBase's own (the runtime reads it from the jar)."""

from __future__ import annotations

import pytest

from hbase import jars, probe
from store.io.connection import IDL_PATH, idl


def test_the_vendored_idl_is_the_one_in_the_pinned_hbase_thrift_jar() -> None:
    if jars.cached() is None:
        pytest.skip("the HBase jars are not fetched (`make jars`)")
    assert IDL_PATH.read_text(encoding="utf-8") == probe.thrift2_idl_text()
    # Both load to the same service: every call the store makes exists on the runtime's side.
    assert set(idl().THBaseService.thrift_services) == set(probe.load_thrift2_idl().THBaseService.thrift_services)
