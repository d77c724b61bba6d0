"""The formats ``bench report`` writes, declared once: the command line offers them (without
importing the renderer and its pandas at start-up) and ``render`` checks against them."""
from __future__ import annotations

FORMATS = ("html", "csv", "md")
