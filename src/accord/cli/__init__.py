"""The ``fx`` command line: thin commands over the library."""
