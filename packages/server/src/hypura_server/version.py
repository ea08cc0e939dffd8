"""The version of the server package (its own module, so the API modules need not import the package)."""
__version__ = "0.1.0"
