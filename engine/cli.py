"""The `temu-sync` command line: parses arguments, loads config, sets up logging, dispatches.

Exit codes (interface.md): 0 success; 1 failure; 2 usage or configuration error;
3 finished, but some shops failed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from engine.config import ConfigError, Settings, config_path, load_config
from engine.logs import setup_logging

log = logging.getLogger("engine.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


class UsageError(Exception):
    pass


def _timestamp(text: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 timestamp: {text!r} (e.g. 2025-01-01T00:00:00Z)"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 already; keep its message short
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="temu-sync", description="Temu orders and returns into Postgres.")
    p.add_argument("--config", help="config file (default: $TEMU_SYNC_CONFIG or ./config.toml)")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("migrate", help="create or upgrade the schema (idempotent)")

    run = sub.add_parser("run", help="the daemon: sync, reconciler, HTTP server")
    run.add_argument("--once", action="store_true", help="one pass of everything, then exit")
    run.add_argument("--json", action="store_true", help="print a JSON summary last")

    bf = sub.add_parser("backfill", help="one-shot, resumable history load")
    bf.add_argument("--since", type=_timestamp, required=True)
    bf.add_argument("--until", type=_timestamp)
    bf.add_argument("--shop", action="append", dest="shops", metavar="ID")
    bf.add_argument("--stream", choices=("orders", "returns", "all"), default="all")
    bf.add_argument("--json", action="store_true")

    rc = sub.add_parser("reconcile", help="one reconciler pass")
    rc.add_argument("--once", action="store_true", required=True)
    rc.add_argument("--json", action="store_true")

    st = sub.add_parser("status", help="cursors, lag, errors, outbox")
    st.add_argument("--json", action="store_true")

    lb = sub.add_parser("labels", help="return labels")
    lsub = lb.add_subparsers(dest="labels_command", required=True, parser_class=_Parser)
    imp = lsub.add_parser("import", help="queue return labels from a JSON lines file")
    imp.add_argument("file")

    pr = sub.add_parser("prune", help="apply [retention]: remove old changes, tasks, events")
    pr.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    pr.add_argument("--json", action="store_true")

    sub.add_parser("demo", help="embedded Postgres + simulator + engine, end to end")

    sim = sub.add_parser("simulate", help="the built-in Temu + Orange Connex simulator")
    sim.add_argument("--listen", default="127.0.0.1:8765")
    sim.add_argument("--orders", type=int, default=10_000, help="orders per shop")
    sim.add_argument("--returns", type=int, default=500, help="returns per shop")
    sim.add_argument("--shops", type=int, default=2)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--faults", type=float, default=0.0, help="fault rate 0..1")
    sim.add_argument("--latency-ms", type=float, default=0.0)
    sim.add_argument("--jitter-ms", type=float, default=0.0)
    sim.add_argument("--drift", type=float, default=0.0, help="drift rate 0..1")
    return p


def _load(args: argparse.Namespace) -> Settings:
    settings = load_config(config_path(args.config))
    if args.command not in ("migrate", "status", "prune") and not settings.shops:
        raise ConfigError(settings.source, "shops", "no [[shops]] configured")
    if getattr(args, "shops", None):
        known = {s.id for s in settings.shops}
        for shop in args.shops:
            if shop not in known:
                raise UsageError(f"--shop {shop!r} is not a configured shop id")
    return settings


def tune_gc() -> None:
    """Every Temu page parses into thousands of small objects and up to a window's worth of
    pages are alive at once, so the default collector re-scans them constantly (about a
    quarter of the engine's CPU per page, measured). Objects from start-up are frozen out of
    collection and the young generation is collected less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    tune_gc()
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine import commands

    if args.command in ("demo", "simulate"):
        setup_logging(args.log_format, args.verbose, ())
        if args.command == "demo" and not args.verbose:
            # The demo prints its own summary; per-record log lines would drown it.
            logging.getLogger("engine").setLevel(logging.WARNING)
        handler = commands.demo if args.command == "demo" else commands.simulate
        try:
            return _run(handler(args))
        except KeyboardInterrupt:
            return EXIT_OK
    try:
        settings = _load(args)
    except ConfigError as exc:
        print(f"temu-sync: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"temu-sync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_format, args.verbose, settings.secrets())
    try:
        return _run(commands.dispatch(args, settings))
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except commands.CommandError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except Exception as exc:  # the last line of defence: a clear message, not a traceback
        log.error("failed: %s", exc, exc_info=args.verbose > 0)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
