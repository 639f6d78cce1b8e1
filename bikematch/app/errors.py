"""The one kind of error the application raises for a problem the user can fix."""


class UserError(Exception):
    """A mistake the user can correct (a bad option, a missing prerequisite): the
    command line prints `error: <message>` as one line and exits with code 2."""
