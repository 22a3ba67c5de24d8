"""tmpl2deb: image templates as Debian packages (pack, inspect, unpack a root filesystem)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
