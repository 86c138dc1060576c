"""The ``simtool`` command line: thin Typer commands over the library."""
