"""Analysis of a result folder: per-second series, statistics, breaking point."""
