"""Polycorn: a high-availability, multi-master, pre-fork WSGI HTTP server for Unix."""

__version__ = "0.1.0"
