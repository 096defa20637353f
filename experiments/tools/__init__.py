"""Stand-alone probes that explain a measurement (not experiments: no result folder)."""
