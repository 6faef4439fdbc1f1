# Security tests use the integration fixtures (a real hutchd per module).
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from hutch_fixtures import hutchd, make_hutchd, sandbox  # noqa: E402,F401
