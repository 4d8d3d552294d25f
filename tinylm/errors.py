"""The exceptions tinylm raises for things a user can fix.

The CLI turns each into one line on stderr: usage errors (bad config, bad
option) exit with code 2, runtime errors (data, checkpoint, backend) with 1.
Internal invariants use ``assert``; these are for the user's mistakes. The two
checks every config dataclass makes, and its JSON form, are here too, so their messages read
the same.
"""

from dataclasses import asdict, fields


class TinyLMError(Exception):
    """Base class: a problem the user can act on, described in one line."""

    exit_code = 1


class ConfigError(TinyLMError, ValueError):
    """A configuration value is invalid (says which, and what would be valid)."""

    exit_code = 2


class DataError(TinyLMError):
    """Training or evaluation data is missing, empty, undecodable or too short."""


class CheckpointError(TinyLMError):
    """A checkpoint is missing, truncated, tampered with or does not fit the model."""


class BackendUnavailable(TinyLMError):
    """A backend was asked for but cannot run here (the message says why)."""


class TrainingDiverged(TinyLMError):
    """The loss or a gradient became NaN or infinite."""


class DistributedError(TinyLMError):
    """A data-parallel job cannot start, or a rank stopped answering within the timeout."""


class ResourceError(TinyLMError):
    """A run would need more memory (or disk) than the machine has; says what to shrink."""


def require_positive_ints(config, names) -> None:
    """ConfigError unless each named field of ``config`` is an int > 0 (a bool is not an int here)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def require_choice(config, name: str, choices) -> None:
    """ConfigError unless field ``name`` of ``config`` is one of ``choices`` (a tuple, or a dict's keys)."""
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


class ConfigRecord:
    """Mixin for a config dataclass saved as a JSON object: ``to_dict`` and back with ``from_dict``.

    ``from_dict`` refuses a field the class does not have, naming it (``KIND``, a class
    attribute and not a field, says whose); a dict older than a field (an old
    checkpoint) gets the field's default.
    """

    KIND = "model"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.KIND} config field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)
