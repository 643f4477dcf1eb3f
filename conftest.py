"""Test-wide settings, read by pytest before it collects anything (unit tests and notebooks alike).

The notebook kernels that nbval starts inherit this process's environment, so setting the mode here is
how `pytest` runs every notebook in smoke mode. Set XAI_COURSE_MODE yourself to override it.
"""

import os

os.environ.setdefault("XAI_COURSE_MODE", "smoke")
os.environ.setdefault("MPLBACKEND", "Agg")
# tqdm writes to stderr; in a notebook checked by nbval that would be compared output, so keep bars quiet.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
