"""Summaries over documents and paired bootstrap intervals, seeded so that the same inputs give the same figures.

A rate measured in units (characters, words, cells, boxes, pages) is pooled: the sum of its errors over the sum
of its units (corpus CER, not the mean of per-document CERs); counts are summed; every other metric (field
accuracy, validity, text similarity, pass rate per document) is the mean over documents. A paired interval
resamples documents with replacement, the same draw for both runs, and takes the percentiles of the difference.
"""
from __future__ import annotations

import math

# rate -> the count it is pooled over
POOLED = {"cer": "chars", "wer": "words", "cell_accuracy": "cells", "cell_precision": "output_cells",
          "header_match": "columns", "box_recall": "truth_boxes", "box_precision": "output_boxes",
          "seconds_per_page": "timed_pages", "image_tokens_per_page": "timed_pages"}
COUNTS = {"pages", "chars", "words", "fields", "cells", "output_cells", "columns", "truth_boxes", "output_boxes",
          "timed_pages", "tests", "passed"}
LOWER_IS_BETTER = {"cer", "wer", "seconds_per_page", "image_tokens_per_page"}


def aggregate(metric: str, documents: list[dict]) -> float | None:
    """A metric over documents (only those that have it), as the module docstring says."""
    values = [d[metric] for d in documents if metric in d and _finite(d[metric])]
    if not values:
        return None
    if metric in COUNTS:
        return float(sum(values))
    weight = POOLED.get(metric)
    if weight is not None:
        pairs = [(d[metric], d.get(weight, 0)) for d in documents if metric in d and _finite(d[metric])]
        units = sum(w for _, w in pairs)
        return sum(v * w for v, w in pairs) / units if units else sum(values) / len(values)
    return sum(values) / len(values)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def paired_interval(metric: str, base: list[dict], other: list[dict], samples: int, seed: int,
                    confidence: float = 0.95) -> tuple[float, float] | None:
    """The bootstrap interval of aggregate(other) - aggregate(base) over paired documents (same order)."""
    import numpy as np

    keep = [i for i in range(len(base)) if metric in base[i] and metric in other[i]]
    if len(keep) < 2 or metric in COUNTS:
        return None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(keep), size=(samples, len(keep)))
    weight = POOLED.get(metric)

    def pooled(documents: list[dict]) -> np.ndarray:
        values = np.array([float(documents[i][metric]) for i in keep])
        if weight is None:
            return values[draws].mean(axis=1)
        units = np.array([float(documents[i].get(weight, 0)) for i in keep])
        totals = units[draws].sum(axis=1)
        return np.where(totals > 0, (values * units)[draws].sum(axis=1) / np.maximum(totals, 1e-12),
                        values[draws].mean(axis=1))

    differences = pooled(other) - pooled(base)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(differences, tail)), float(np.percentile(differences, 100 - tail))


def stratified_interval(groups: list[list[float]], samples: int, seed: int, confidence: float = 0.95,
                        paired: list[list[float]] | None = None) -> tuple[float, float] | None:
    """olmOCR-bench's interval: resample within each group (test file), score = mean of the group means; with
    `paired` (the other run's scores, same tests), the interval of the difference paired - groups."""
    import numpy as np

    kept = [(group, paired[i] if paired is not None else None) for i, group in enumerate(groups) if group]
    if not kept:
        return None
    rng = np.random.default_rng(seed)
    totals = np.zeros(samples)
    for group, other in kept:
        draws = rng.integers(0, len(group), size=(samples, len(group)))
        means = np.asarray(group, dtype=float)[draws].mean(axis=1)
        if other is not None:
            means = np.asarray(other, dtype=float)[draws].mean(axis=1) - means
        totals += means
    totals /= len(kept)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(totals, tail)), float(np.percentile(totals, 100 - tail))
