"""The exceptions tinylm raises for things a user can fix.

The CLI turns each into one line on stderr: usage errors (bad config, bad
option) exit with code 2, runtime errors (data, checkpoint, backend) with 1.
Internal invariants use ``assert``; these are for the user's mistakes.
"""


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
