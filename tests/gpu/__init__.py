"""GPU acceptance suite (see README.md here). A package so that its conftest does not collide
with tests/conftest.py, which the CPU tests import as the top-level module ``conftest``."""
