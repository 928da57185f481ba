"""Exit codes of the command line, which error means which, and its JSON printing.

0 success; 1 damage found, or a replay that did not complete; 2 bad usage or bad input;
141 (128 + SIGPIPE) stdout closed before the output was all written (`| head`).
"""

import json

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130
EXIT_CLOSED_STDOUT = 141    # 128 + SIGPIPE: what a shell reports for a program SIGPIPE ended


def exit_code_for(error):
    """The exit code of an error raised to the command line: a damaged store or a replay a
    destination refused is a failure (1); anything else of ours is bad input (2)."""
    from tfblackbox.schema.errors import ReplayError, StoreDamageError
    return EXIT_FAILED if isinstance(error, (StoreDamageError, ReplayError)) else EXIT_USAGE


def print_json(obj):
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))
