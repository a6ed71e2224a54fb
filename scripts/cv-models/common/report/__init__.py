"""Reports over runs: per-image parity, comparisons of metrics files, end-to-end validation."""
