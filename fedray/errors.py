"""User-facing errors: one exception type the CLI prints as a paragraph, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FedrayError(Exception):
    """A problem with the user's input (config, data, arguments) that we can explain in words."""


class ConfigError(FedrayError):
    """The study configuration is invalid."""


class DataError(FedrayError):
    """A dataset on disk is missing, malformed or inconsistent."""


class DownloadError(DataError):
    """A dataset could not be downloaded (no network, or no package index that has it)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""
