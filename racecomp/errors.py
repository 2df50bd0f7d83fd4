"""The one exception type for "the input is wrong" (a flag's value, a missing or malformed file, bad data),
raised where input is checked. Scripts print it as one line (cli.run_script); every other exception is a
bug or a failure and keeps its traceback. A subclass of ValueError, so callers that catch ValueError still do.
"""


class InputError(ValueError):
    pass
