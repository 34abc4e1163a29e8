"""zaggd: aggregate the lines of many files on many machines over ZeroMQ."""

__version__ = "0.1.0"
