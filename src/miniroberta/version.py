"""The package version, in a module of its own so that any module can import it without importing the package root
(whose lazy public API would otherwise close an import cycle: root -> api -> ... -> root)."""

__version__ = "0.1.0"
