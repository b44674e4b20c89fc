"""`python bench/backfill.py [--quick] [--database-url URL]`: the backfill scenario alone.

The same as `python -m bench --only backfill`: 200,000 orders, one shop, latency 60 ms ± 10 ms;
writes bench/results/backfill.json and backfill.png (orders/s, accepted requests/s over the
limit, CPU per page and per 1,000 orders, peak RSS and RSS over time)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import main  # importable thanks to the path above

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "--only", "backfill", *sys.argv[1:]]
    main()
