"""bouncekeeper: bounce handling inside the MTA.

The package root is `milter/` (the source root), never a package itself: pymilter installs top-level
modules named `milter`, `Milter` and `mime`, and an `__init__.py` there would shadow them.
"""

__version__ = "0.1.0"
