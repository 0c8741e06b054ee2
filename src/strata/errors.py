"""The one exception family whose message a user sees as `error: <message>`."""


class StrataError(Exception):
    """An error the user caused or must act on; its message is printed as one line."""


class NotFoundError(StrataError):
    """A ref, object, deployment or package that was asked for does not exist."""


class MissingFileObjectError(NotFoundError):
    """A content object a tree names is not in the repository."""

    def __init__(self, checksum: str) -> None:
        super().__init__(f"file object {checksum} not found")
        self.checksum = checksum


class CorruptionError(StrataError):
    """Stored data does not match its checksum or is malformed."""


class InvalidInputError(StrataError):
    """Input from the command line or an untrusted file is not acceptable."""


class LockedError(StrataError):
    """Another operation holds the lock this one needs."""
