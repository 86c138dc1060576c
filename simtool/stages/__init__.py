"""Stages: the glue between on-disk formats and registries (build, train, embed, evaluate, compare).

Each stage reads only what the previous one wrote: build-data → dataset directory → train → run
directory → save-embeddings → embeddings file → evaluate → results → compare → tables.
"""
