"""Step 5, runs: a whole run over many documents (batching, ledger and resume, outputs, progress)."""
