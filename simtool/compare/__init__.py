"""Comparing runs: replicate-aware aggregation of result records (:mod:`.aggregate`) and tables (:mod:`.tables`)."""
