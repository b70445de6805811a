"""Step 4, task output: each task turns pages into engine requests and engine results into per-document output."""
