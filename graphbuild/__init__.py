"""graphbuild: rebuild every image downstream of an updated base, in dependency order."""

__version__ = "0.1.0"
