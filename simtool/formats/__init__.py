"""The on-disk formats, one module each: dataset directory, run directory (with weights files), embeddings file, results."""
