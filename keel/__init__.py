"""Keel: the whole model lifecycle in one pip install.

The fluent tracking functions (``keel.start_run``, ``keel.log_metric``, ...) work over an
explicit :class:`keel.Client`; heavy libraries (pandas, pyarrow, scipy, sklearn) are imported
only by the functions that need them, so ``import keel`` stays fast.
"""
