"""``temu-sync labels import FILE``: queue return labels from JSON lines.

Exit codes: 0 the file was processed (bad lines are reported ``line N: reason`` on stderr and
skipped; an empty file is nothing to do); 1 no line could be queued; 2 the file cannot be read;
3 some lines were queued, but a shop failed its access-token check (interface.md "Access
tokens": its lines are refused, nothing more is sent to Temu for it).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from engine.app.reconciler import label_queue
from engine.app.runtime import Runtime
from engine.cluster.oneshot import apps_paced_elsewhere
from engine.errors import ExitCode
from engine.reconcile.labels import parse_label_lines
from engine.reconcile.ports import LabelRejected
from engine.store.leases import LeaseStore
from engine.sync.tokens import ShopRefused, TokenScreen
from engine.temu.token_info import LABEL_IMPORT_SCOPES

__all__ = ["import_labels"]

log = logging.getLogger(__name__)


async def import_labels(rt: Runtime, path: str) -> int:
    try:
        data = await asyncio.to_thread(Path(path).read_bytes)
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return ExitCode.USAGE
    good, bad = parse_label_lines(data, [s.id for s in rt.settings.shops])
    # The carrier check is the only Temu call: a shop's token must allow that much. A shop
    # whose app another process paces (a daemon, a backfill) is not called from here at all.
    screen = TokenScreen(rt.token_gate(LABEL_IMPORT_SCOPES))
    busy = await apps_paced_elsewhere(LeaseStore(rt.pool), {s.app_key for s in rt.settings.shops})
    unchecked = [s.id for s in rt.settings.shops if s.app_key in busy]
    if unchecked:
        log.info(
            "app(s) %s are paced by another process: carriers and tokens of shop(s) %s are "
            "checked when their uploads run there",
            ", ".join(sorted(busy)),
            ", ".join(unchecked),
        )
    queue = label_queue(rt, gate=screen.require, unchecked=unchecked)
    queued = 0
    for line_no, req in good:
        try:
            result = await queue.queue(req)
        except LabelRejected as exc:
            bad.append((line_no, exc.reason))
            continue
        except ShopRefused as exc:
            bad.append((line_no, exc.reason))
            continue
        queued += 1
        if result.duplicate:
            log.info("line %d: the same label was already queued", line_no)
    for line_no, reason in sorted(bad):
        print(f"line {line_no}: {reason}", file=sys.stderr)
    print(f"{queued} label(s) queued, {len(bad)} line(s) refused")
    if screen.refused:
        print(f"  shops failed: {', '.join(sorted(screen.refused))}")
    if bad and not queued:
        return ExitCode.FAILURE
    return ExitCode.PARTIAL if screen.refused else ExitCode.OK
