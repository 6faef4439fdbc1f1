# Integration tests drive a real hutchd (fixtures in hutch_fixtures.py).
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from hutch_fixtures import hutchd, make_hutchd, sandbox  # noqa: E402,F401
