"""The store: the zoo handle, staged models, Icechunk weight arrays, versioned Parquet tables, readers.

Import from the modules themselves (``weightzoo.io.handle``, ``weightzoo.io.reader``, ...):
this package imports nothing eagerly, so that ``import weightzoo.io.x`` stays cheap.
"""
