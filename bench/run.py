"""The benchmark suite: ``python -m bench [--only NAME,...] [--quick] [--database-url URL]``.

Scenarios (bench/scenarios/): pacing, backfill, multishop, mixed, webhooks, diff, baselines,
growth. Each runs in its own process (bench/worker.py) against a simulator in yet another
process, and writes
bench/results/<name>.json and <name>.png. Afterwards bench/results/summary.json and summary.md
are rebuilt from every result present, so rerunning one scenario refreshes the table.

``--only profile`` runs the backfill under py-spy (not part of the standard suite) and writes
backfill-profile.{json,md,txt}.
Without ``--database-url`` an embedded Postgres is kept under bench/.data.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench import machine, results
from bench.harness import RESULTS
from bench.profile import in_run, parse, summarise
from bench.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / ".data"
PROFILE = "profile"
PROFILE_RATE_HZ = 100


def _worker_argv(
    name: str, url: str, desc: dict[str, Any], command: str, quick: bool, out: Path
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "bench.worker",
        name,
        "--database-url",
        url,
        "--machine",
        orjson.dumps(desc).decode(),
        "--command",
        command,
        "--results",
        str(out),
    ]
    return argv + (["--quick"] if quick else [])


def _run_worker(argv: list[str], name: str) -> bool:
    started = time.monotonic()
    print(f"== {name} ...", flush=True)
    proc = subprocess.run(argv, cwd=REPO, check=False)
    took = time.monotonic() - started
    print(f"== {name}: {'ok' if proc.returncode == 0 else 'FAILED'} in {took:.0f} s", flush=True)
    return proc.returncode == 0


def _profile(url: str, desc: dict[str, Any], command: str, quick: bool) -> bool:
    """The backfill once more under py-spy (sampling from outside, no engine change)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = RESULTS / "profile"
    out.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / "backfill-profile.txt"
    argv = [
        spy,
        "record",
        "--format",
        "raw",
        "--rate",
        str(PROFILE_RATE_HZ),
        "--nonblocking",
        "-o",
        str(raw),
        "--",
        *_worker_argv("backfill", url, desc, command, quick, out),
    ]
    if not _run_worker(argv, "backfill under py-spy"):
        return False
    run = results.read(out / "backfill.json")
    pages = run["detail"]["figures"]["pages"]
    summary = summarise(
        in_run(parse(raw.read_text().splitlines())), rate_hz=PROFILE_RATE_HZ, pages=pages
    )
    summary["run"] = {
        k: run["detail"]["figures"][k]
        for k in ("orders", "pages", "cpu_ms_per_page", "orders_per_s")
    }
    (RESULTS / "backfill-profile.json").write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n"
    )
    (RESULTS / "backfill-profile.md").write_text(profile_markdown(summary))
    print((RESULTS / "backfill-profile.md").read_text())
    return True


def profile_markdown(s: dict[str, Any]) -> str:
    lines = [
        f"py-spy, {s['rate_hz']} Hz, {s['samples']} samples in the event loop (start-up and "
        f"plotting left out) over {s['pages']} pages: "
        f"{s['cpu_ms_per_page_sampled']} ms of engine CPU per page (sampled).",
        "",
        "| area (self time) | % | ms/page |",
        "|---|---|---|",
    ]
    lines += [f"| {r['function']} | {r['pct']} | {r['ms_per_page']} |" for r in s["by_area"]]
    lines += ["", "| function (self time) | % | ms/page |", "|---|---|---|"]
    lines += [
        f"| `{r['function']}` | {r['pct']} | {r['ms_per_page']} |" for r in s["top_self"][:20]
    ]
    lines += ["", "| function (inclusive) | % | ms/page |", "|---|---|---|"]
    lines += [
        f"| `{r['function']}` | {r['pct']} | {r['ms_per_page']} |" for r in s["top_inclusive"][:25]
    ]
    return "\n".join(lines) + "\n"


def write_summary() -> list[str]:
    docs = []
    for name in SCENARIOS:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        doc = results.read(path)
        if results.validate(doc):
            print(f"skipping {path.name} in the summary: not a suite result", file=sys.stderr)
            continue
        docs.append(doc)
    (RESULTS / "summary.json").write_bytes(
        orjson.dumps(results.summary_doc(docs), option=orjson.OPT_INDENT_2) + b"\n"
    )
    (RESULTS / "summary.md").write_text(results.summary_markdown(docs))
    return [d["scenario"] for d in docs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--only", default="", help=f"comma-separated, of {', '.join(SCENARIOS)}, profile"
    )
    ap.add_argument("--quick", action="store_true", help="small data sets: a smoke test")
    ap.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = set(names) - {*SCENARIOS, PROFILE}
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    command = shlex.join(["python", "-m", "bench", *sys.argv[1:]])

    embedded = None
    if args.database_url:
        url, where = args.database_url, "external (--database-url)"
    else:
        from engine.store.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(DATA)
        url, where = embedded.start(), "embedded pgserver under bench/.data (unix socket)"
    started = time.monotonic()
    failed = []
    try:
        desc = machine.describe(
            postgres=asyncio.run(machine.postgres_version(url)), database=where, event_loop="uvloop"
        )
        RESULTS.mkdir(parents=True, exist_ok=True)
        for name in names:
            if name == PROFILE:
                ok = _profile(url, desc, command, args.quick)
            else:
                ok = _run_worker(_worker_argv(name, url, desc, command, args.quick, RESULTS), name)
            if not ok:
                failed.append(name)
    finally:
        if embedded is not None:
            embedded.stop()
    included = write_summary()
    print((RESULTS / "summary.md").read_text())
    print(f"suite took {time.monotonic() - started:.0f} s; summary of {', '.join(included)}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
