"""Runs `python -m internvl_cli.cli ARGS` under cProfile in every thread of this process (the producer and the
request threads do the work, not the main thread), then prints the top entries by own time: where the client's
CPU goes. Usage: python benchmarks/_profiled.py TOP ARGS..."""
from __future__ import annotations

import cProfile
import io
import pstats
import sys
import threading
import time

profiles: list[cProfile.Profile] = []
_run = threading.Thread.run


def _profiled_run(self) -> None:
    profile = cProfile.Profile(time.thread_time)  # CPU time of this thread: waits do not count
    profiles.append(profile)
    profile.runcall(_run, self)


def main() -> None:
    top = int(sys.argv[1])
    sys.argv = ["internvl", *sys.argv[2:]]
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    from internvl_cli.cli import main as cli_main

    main_profile = cProfile.Profile(time.thread_time)
    profiles.append(main_profile)
    try:
        main_profile.runcall(cli_main)
    except SystemExit:
        pass
    stats = None
    for profile in profiles:
        try:
            stats = pstats.Stats(profile) if stats is None else (stats.add(profile) or stats)
        except TypeError:  # a thread that never ran
            continue
    out = io.StringIO()
    stats.stream = out
    total = sum(row[2] for row in stats.stats.values())  # own time over all functions and threads
    print(f"profiled CPU time, all threads of the main process: {total:.1f} s", flush=True)
    entries = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    for (filename, line, name), (_, calls, own, _cum, _) in entries:
        where = filename.split("site-packages/")[-1].split("internvl_cli/")[-1]
        print(f"  {own:7.2f} s {100 * own / total:5.1f} %  {calls:>8}  {name} ({where}:{line})")


if __name__ == "__main__":
    main()
