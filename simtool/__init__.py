"""simtool: learn and measure semantic image similarity from the command line."""

__version__ = "0.1.0"
