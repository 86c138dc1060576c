"""Embedding models into the embeddings format: trained runs (:mod:`simtool.embedding.runs`).

Used by ``save-embeddings`` and by ``evaluate`` on a run directory; imports no training code.
"""
