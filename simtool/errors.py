"""User-facing errors.

Anything a user can fix (a bad option, a missing file, an unknown preset) is raised as
:class:`UserError` with one sentence that names the problem and the fix. The CLI prints the
message and exits with code 2; ``--debug`` shows the traceback.
"""


class UserError(Exception):
    """An error caused by the user's input; its message is shown verbatim, exit code 2."""

    exit_code = 2
