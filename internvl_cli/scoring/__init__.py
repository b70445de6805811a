"""Step 6, scoring: a run's outputs against ground truth -> per-document metrics -> summaries, comparisons, reports.

Nothing here loads a model or imports torch: `internvl eval` reads output folders (records, outputs, the ledger)
and truth files, so scoring is fast and repeatable. Edit distances come from rapidfuzz and one-to-one matchings
from scipy (the `eval` extra).
"""
