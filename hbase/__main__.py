"""``python -m hbase``: the runtime without the rest of seqstore (what the Docker image runs).

    python -m hbase serve [--data-dir DIR] [--bind ADDR] [--thrift-port N] [--thrift2-port N]
    python -m hbase probe [--host H] [--port N] [--thrift2-port N]
    python -m hbase fetch
"""

from __future__ import annotations

import argparse
import logging
import sys

from hbase import jars, launcher, probe
from hbase.errors import HBaseRuntimeError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hbase")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run HBase + Thrift servers in the foreground")
    serve.add_argument("--data-dir", default=None)
    serve.add_argument("--bind", default="127.0.0.1")
    serve.add_argument("--thrift-port", type=int, default=None)
    serve.add_argument("--thrift2-port", type=int, default=None)
    check = sub.add_parser("probe", help="create/put/get/delete round trip; exit 0 if it works")
    check.add_argument("--host", default="127.0.0.1")
    check.add_argument("--port", type=int, required=True, help="Thrift1 port")
    check.add_argument("--thrift2-port", type=int, default=None)
    sub.add_parser("fetch", help="fetch the pinned HBase jars with Maven")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            return launcher.serve(args.data_dir, bind=args.bind, thrift_port=args.thrift_port,
                                  thrift2_port=args.thrift2_port)
        if args.command == "probe":
            probe.probe_thrift1(args.host, args.port, timeout_s=20)
            if args.thrift2_port:
                probe.probe_thrift2(args.host, args.thrift2_port, probe.load_thrift2_idl(), timeout_s=20)
            return 0
        print(jars.fetch(quiet=False))  # noqa: T201
        return 0
    except HBaseRuntimeError as exc:
        print(f"hbase: error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except Exception as exc:  # noqa: BLE001 - a failed probe is an exit code, not a trace
        print(f"hbase: probe failed: {exc!r}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
