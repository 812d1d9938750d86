"""Modules that ``keel models export`` copies verbatim into what it writes: the ``__init__.py``
of a wheel's package (:mod:`.wheel_package`) and a Lambda function's ``handler.py``
(:mod:`.lambda_handler`). Each reads ``keel-export.json`` beside it to find its model, so the
code is the same for every model (and is linted and type-checked here like the rest of keel).
"""

__all__: list[str] = []
