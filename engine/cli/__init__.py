"""The `temu-sync` command line: parses arguments, loads config, sets up logging, dispatches.

Exit codes (interface.md): 0 success; 1 failure; 2 usage or configuration error;
3 finished, but some shops failed; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import logging
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from engine.config import ConfigError, Settings, config_path, load_config
from engine.errors import ExitCode
from engine.logs import setup_logging

log = logging.getLogger("engine.cli")


EPILOG = """\
exit codes:
  0    success
  1    failure
  2    usage or configuration error (the message names the file and key)
  3    finished, but some shops failed (the others completed)
  130  interrupted (Ctrl-C or SIGTERM); `run` treats SIGINT like SIGTERM: a clean stop, exit 0

configuration: --config PATH, else $TEMU_SYNC_CONFIG, else ./config.toml. A relative
data_dir is resolved next to the config file; a relative *_file secret path is resolved
against $CREDENTIALS_DIRECTORY when systemd sets it.

environment:
  TEMU_SYNC_CONFIG        config file when --config is not given
  CREDENTIALS_DIRECTORY   set by systemd (LoadCredential=): base of relative *_file paths
  JOURNAL_STREAM          set by systemd: text logs then carry <N> priorities, no timestamp
  NOTIFY_SOCKET, WATCHDOG_USEC
                          set by systemd (Type=notify, WatchdogSec=): `run` reports to them
  any NAME given as a *_env key in the config (secrets)

--config, --log-format and -v may also follow the command (temu-sync status -v).
"""


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
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def version() -> str:
    try:
        return importlib.metadata.version("temu-sync")
    except importlib.metadata.PackageNotFoundError:  # a bare checkout on sys.path
        return "unknown (not installed)"


def _global_options(suffix: str = "") -> _Parser:
    """The options accepted before the command and, with ``suffix``, after it. After the
    command they land in their own dests (argparse would otherwise let the subcommand's
    defaults overwrite what was given before it); :func:`_merge_global_options` joins them."""
    g = _Parser(add_help=False)
    default = argparse.SUPPRESS if suffix else None
    g.add_argument(
        "--config",
        dest=f"config{suffix}",
        default=default,
        help="config file (default: $TEMU_SYNC_CONFIG or ./config.toml)",
    )
    g.add_argument(
        "--log-format",
        dest=f"log_format{suffix}",
        choices=("text", "json"),
        default=default or "text",
        help="log line format on stderr (default: text)",
    )
    g.add_argument(
        "-v",
        "--verbose",
        dest=f"verbose{suffix}",
        action="count",
        default=default or 0,
        help="more detail: -v engine debug, -vv everything",
    )
    return g


def _merge_global_options(args: argparse.Namespace) -> argparse.Namespace:
    """An option given after the command wins; -v counts add up wherever they appear."""
    for name in ("config", "log_format"):
        late = args.__dict__.pop(f"{name}_after", None)
        if late is not None:
            setattr(args, name, late)
    args.verbose += args.__dict__.pop("verbose_after", 0)
    return args


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="temu-sync",
        description="Temu orders and returns into Postgres.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options()],
    )
    p.add_argument("--version", action="version", version=f"temu-sync {version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    # Every command (and `labels import`) accepts the global options after it too.
    after = _global_options("_after")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[after])

    command("migrate", help="create or upgrade the schema (idempotent)")

    run = command("run", help="the daemon: sync, reconciler, HTTP server")
    run.add_argument("--once", action="store_true", help="one pass of everything, then exit")
    run.add_argument("--json", action="store_true", help="print a JSON summary last")

    bf = command("backfill", help="one-shot, resumable history load")
    bf.add_argument("--since", type=_timestamp, required=True)
    bf.add_argument("--until", type=_timestamp)
    bf.add_argument("--shop", action="append", dest="shops", metavar="ID")
    bf.add_argument("--stream", choices=("orders", "returns", "all"), default="all")
    bf.add_argument("--json", action="store_true")

    rc = command("reconcile", help="one reconciler pass")
    rc.add_argument("--once", action="store_true", required=True)
    rc.add_argument("--json", action="store_true")

    st = command("status", help="cursors, lag, errors, outbox")
    st.add_argument("--json", action="store_true")

    lb = command("labels", help="return labels")
    lsub = lb.add_subparsers(dest="labels_command", required=True, parser_class=_Parser)
    imp = lsub.add_parser(
        "import", help="queue return labels from a JSON lines file", parents=[after]
    )
    imp.add_argument("file")

    pr = command("prune", help="apply [retention]: remove old changes, tasks, events")
    pr.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    pr.add_argument("--json", action="store_true")

    wh = command("webhooks", help="Temu event subscriptions")
    wsub = wh.add_subparsers(dest="webhooks_command", required=True, parser_class=_Parser)
    subscribe = wsub.add_parser(
        "subscribe", help="subscribe shops to [webhooks] events", parents=[after]
    )
    subscribe.add_argument("--shop", action="append", dest="shops", metavar="ID")

    command("demo", help="embedded Postgres + simulator + engine, end to end")

    sim = command("simulate", help="the built-in Temu + Orange Connex simulator")
    sim.add_argument("--listen", default="127.0.0.1:8765")
    sim.add_argument("--orders", type=int, default=10_000, help="orders per shop")
    sim.add_argument("--returns", type=int, default=500, help="returns per shop")
    sim.add_argument("--shops", type=int, default=2)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--faults", type=float, default=0.0, help="fault rate 0..1")
    sim.add_argument("--latency-ms", type=float, default=0.0)
    sim.add_argument("--jitter-ms", type=float, default=0.0)
    sim.add_argument("--drift", type=float, default=0.0, help="drift rate 0..1")
    sim.add_argument(
        "--poison",
        action="store_true",
        help="serve poisoned records (bad bytes, huge numbers, odd types; README Reliability)",
    )
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
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C anywhere, even while parsing or loading config
        return ExitCode.INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    started = time.monotonic()  # a one-shot command's elapsed_s counts from here
    args = _merge_global_options(build_parser().parse_args(argv))
    if not (args.command == "run" and not getattr(args, "once", False)):
        # SIGTERM (systemd stopping a one-shot unit, kill) takes Ctrl-C's way out: the
        # command's cleanup runs (app leases released, pool closed), exit 130. The daemon
        # installs its own handlers: for it SIGTERM is a clean stop.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    from engine.cli import commands

    if args.command in ("demo", "simulate"):
        setup_logging(args.log_format, args.verbose, ())
        if args.command == "demo" and not args.verbose:
            # The demo prints its own summary; per-record log lines would drown it.
            logging.getLogger("engine").setLevel(logging.WARNING)
        handler = commands.demo if args.command == "demo" else commands.simulate
        try:
            return _run(handler(args))
        except KeyboardInterrupt:
            return ExitCode.INTERRUPTED
    try:
        settings = _load(args)
    except ConfigError as exc:
        print(f"temu-sync: configuration error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except UsageError as exc:
        print(f"temu-sync: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    setup_logging(args.log_format, args.verbose, settings.secrets())
    try:
        return _run(commands.dispatch(args, settings, started=started))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except commands.CommandError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except Exception as exc:  # the last line of defence: a clear message, not a traceback
        log.error("failed: %s", exc, exc_info=args.verbose > 0)
        return ExitCode.FAILURE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
