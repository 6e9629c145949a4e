"""weightzoo: versioned weight-space datasets and the studies that use them."""

__version__ = "0.1.0"

__all__ = ["__version__", "open_zoo"]


def open_zoo(path, version=None):
    """Open a zoo directory at its latest (or the named) published version."""
    from weightzoo.io.reader import open_zoo as _open_zoo

    return _open_zoo(path, version=version)
