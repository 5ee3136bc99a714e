"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""


class InputError(Exception):
    """Bad input: a file, row and field that the user can correct.

    The message is the whole story, e.g. ``events.csv: row 17: timestamp: cannot parse 'yesterday'``.
    """

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None, field: str | None = None):
        parts = [str(p) for p in (file, f"row {row}" if row is not None else None, field) if p]
        super().__init__(": ".join(parts + [message]))
