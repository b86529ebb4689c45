"""Pure domain library for MURA screening: archives, imaging, synthetic data, privacy.

Nothing in this package imports Ray: it must run in a plain process, a Ray task, or a
notebook alike (a test walks every module to keep it so).
"""

__version__ = "0.1.0"
