"""Command-line argument types shared by the `python -m` commands: values checked by `moe_edu.validation`."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def arg_type(check: Callable, kind: type) -> Callable[[str], object]:
    """An argparse `type=` that parses `kind` and validates it with `check`, so bad values are usage errors
    (exit 2, the message naming the flag) rather than tracebacks after the work has started."""

    def parse(text: str):
        try:
            return check("value", kind(text))
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).replace("value ", "", 1)) from None

    parse.__name__ = kind.__name__
    return parse
