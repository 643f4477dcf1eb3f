"""See the table of contents in ``helpers/__init__.py``."""
