"""Experiment tracking: experiments, runs, params, metrics (history and latest), tags, search."""

__all__: list[str] = []
