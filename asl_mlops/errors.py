"""The one exception type for bad user input.

Raised at the boundary (CSV files, CLI options, sweep options, serving payloads) with a message
in the user's words that names the file, row, column or field. The CLI turns it into a one-line
message and exit code 2; the scoring model turns it into an HTTP 4xx.
"""


class InputError(ValueError):
    """Bad user input; the message names what is wrong and where."""
