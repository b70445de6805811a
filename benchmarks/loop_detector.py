"""The character loop detector on a server's answer: the streaming detector fed one character at a time (what
`finish_answer` ran before) against the whole-answer detector (`find_text_loop`), on the same texts in one run.

Texts: a 1 MB answer without a loop (numbered lines, the worst case: every period is followed to the end), the
same with a loop at its end, a 1 MB loop from its first character (cut after a few hundred), and a 4 KB page.
The streaming detector is timed on a prefix (`--stream-chars`, 50,000 by default) and its per-character cost
scaled to the whole text: run whole on 1 MB it would take minutes. Both must find the same loop on the prefix.

Run: python benchmarks/loop_detector.py [--stream-chars 50000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import time

import _common

_common.setup_paths()

from internvl_cli.decoding.repetition import find_loop, find_text_loop  # noqa: E402


def texts() -> dict[str, str]:
    lines = "".join(f"line {index}: {index * 7919 % 10007}\n" for index in range(60_000))[:1_000_000]
    return {"1 MB, no loop": lines, "1 MB, loop at its end": lines + "ha" * 600,
            "1 MB loop from the start": "the " * 250_000, "4 KB page, no loop": lines[:4096]}


def fastest(repeat: int, work) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - began)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream-chars", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(_common.machine_note())
    rows = []
    for name, text in texts().items():
        prefix = text[:args.stream_chars]
        streamed, old = fastest(1, lambda: find_loop(list(prefix), list(prefix)))
        per_char = streamed / max(1, len(prefix) if old is None else old.start + old.tokens)
        whole, loop = fastest(args.repeat, lambda: find_text_loop(text))
        same = find_text_loop(prefix) == old
        judged = len(text) if loop is None else loop.start + loop.tokens
        rows.append([name, f"{len(text):,}", f"{judged:,}", f"{per_char * 1e6:.1f}",
                     f"{per_char * judged:.2f}", f"{whole * 1e3:.1f}", f"{whole / judged * 1e9:.0f}",
                     "yes" if same else "NO"])
    _common.print_table(["answer", "chars", "chars judged", "streaming µs/char", "streaming s (scaled)",
                         "whole-answer ms", "whole-answer ns/char", "same loop"], rows)


if __name__ == "__main__":
    main()
