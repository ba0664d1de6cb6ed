"""The ``maqet`` command line."""
