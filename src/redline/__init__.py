"""redline: teach language models from human feedback, and measure what each kind of feedback buys.

``import redline`` is cheap: torch, transformers and every optional package are imported only by the
modules that use them (``redline.models``, ``redline.generation``, ...).
"""

__version__ = "0.1.0"


class RedlineError(Exception):
    """An error a user can act on; the CLI prints it as one line and exits with code 2."""
