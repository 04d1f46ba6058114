"""A worker that reports its memory, for the memory profile: `python -m bench.traced_worker worker.py` (or
`-m bench.trivial_worker`) runs the worker as usual. SIGUSR2 starts tracemalloc (`$BENCH_TRACEMALLOC_FRAMES`
frames, default 8) and writes `tracing`; each SIGUSR1 writes to `$BENCH_TRACEMALLOC_DIR/<pid>/`:

- `census-<n>.json`: every object the garbage collector tracks, counted and sized (`sys.getsizeof`) by type;
- once tracing: `snapshot-<n>.pickle` and `overhead-<n>.json`, a tracemalloc snapshot and what tracing itself
  holds;

then `<n>.done` (n = 1, 2, ...). Tracing starts only when asked: the worker starts at its usual speed and the
census costs nothing until it is taken. Only for bench/profile_worker.py: tracing slows every allocation, so
CPU is never measured here.
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType

FRAMES = int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "8"))


def census() -> dict[str, list[int]]:
    """Objects the collector tracks (containers: instances, dicts, lists, functions...), by type: [count, bytes]."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return {name: [counts[name], sizes[name]] for name in counts}


def main() -> None:
    folder = Path(os.environ["BENCH_TRACEMALLOC_DIR"]) / str(os.getpid())
    folder.mkdir(parents=True, exist_ok=True)
    taken = 0

    def dump(signum: int, frame: FrameType | None) -> None:
        nonlocal taken
        taken += 1
        gc.collect()
        (folder / f"census-{taken}.json").write_text(json.dumps(census()), encoding="utf-8")
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(str(folder / f"snapshot-{taken}.pickle"))
            # What tracing itself holds, so that the profile can take it out of the RSS it reads.
            overhead = {"tracemalloc_bytes": tracemalloc.get_tracemalloc_memory()}
            (folder / f"overhead-{taken}.json").write_text(json.dumps(overhead), encoding="utf-8")
        (folder / f"{taken}.done").write_text("", encoding="utf-8")

    signal.signal(signal.SIGUSR1, dump)

    def trace(signum: int, frame: FrameType | None) -> None:
        tracemalloc.start(FRAMES)
        (folder / "tracing").write_text("", encoding="utf-8")

    signal.signal(signal.SIGUSR2, trace)
    target = sys.argv[1:]
    if target[:1] == ["-m"]:
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = target
        runpy.run_path(target[0], run_name="__main__")


if __name__ == "__main__":
    main()
