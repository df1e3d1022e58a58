"""What the terminal shows: redline's steps, progress bars, results and errors, not the libraries' notices.

Every `redline` command runs inside ``quiet()`` unless ``--verbose`` is given: transformers', TRL's,
PEFT's, accelerate's and datasets' FutureWarnings and DeprecationWarnings, transformers' info and
warning log lines (tokenizer notices, its table of weights missing from a checkpoint: redline prints
one line of its own where a checkpoint does not fit, ``models.report_loading``) and the progress bars
of dataset preparation are hidden. The bars of
downloading and loading weights, training, generating, revising and judging stay, and so does every
error. ``quiet(loading_bars=False)`` (the demo, whose models are on disk) hides the weight-loading bars
too. Where stderr is not a terminal (a log), a bar is redrawn every ten seconds and when it ends (``log_bars``).
``import redline.console`` imports none of those libraries: the settings go through the
environment for a library imported later, and through its API for one already in.
"""

from __future__ import annotations

import contextlib
import os
import sys

# The modules whose deprecation notices a user of redline cannot act on (a warning attributed to
# redline's own code still shows: that one is ours to mend).
LIBRARIES = r"(transformers|trl|peft|accelerate|datasets|huggingface_hub|torch)(\.|$)"
# Read by the libraries when they are imported: transformers' log level, datasets' bars.
ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
ERROR, WARNING = 40, 30  # transformers' (logging's) levels: the quiet one and its default
# A bar redrawn ten times a second is redrawn in place on a terminal, but in a log (`2> run.log`, `| tee`, CI,
# `kubectl logs`, which split lines on \r) each redraw is one more line: ten a second, all through a long `generate`.
LOG_BAR_SECONDS = "10"


@contextlib.contextmanager
def quiet(loading_bars: bool = True):
    """Hide the libraries' notices for the block (module docstring); everything is put back after it."""
    import warnings

    if not loading_bars:
        import transformers.utils.logging  # noqa: F401  (its bars can only be turned off once it is in)
    saved_env = {name: os.environ.get(name) for name in ENV}
    hf_before, datasets_before = _hf_state(), _datasets_state()
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=LIBRARIES)
        for name, value in ENV.items():
            os.environ.setdefault(name, value)  # a value the user set wins
        _set_hf(ERROR, None if loading_bars else False)
        _set_datasets(False)
        try:
            yield
        finally:
            # A library imported inside the block read the environment then, and refuses (with a warning)
            # to turn its bars back on: they stay off in this process, which only a caller of main() sees.
            warnings.filterwarnings("ignore", category=UserWarning, module=LIBRARIES)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _set_hf(*(hf_before or (WARNING, None if loading_bars else True)))  # imported inside: its defaults
            _set_datasets(True if datasets_before is None else datasets_before)


@contextlib.contextmanager
def log_bars():
    """Where stderr is not a terminal, every progress bar (redline's, the trainer's, the loader's) is redrawn at
    most every LOG_BAR_SECONDS, and when it ends; ``$TQDM_MININTERVAL`` set by the user wins. tqdm reads it when
    it is imported, which the commands do inside this block; it is put back after."""
    isatty = getattr(sys.stderr, "isatty", None)
    if (isatty is not None and isatty()) or "TQDM_MININTERVAL" in os.environ:
        yield
        return
    os.environ["TQDM_MININTERVAL"] = LOG_BAR_SECONDS
    try:
        yield
    finally:
        os.environ.pop("TQDM_MININTERVAL", None)


def _hf_state():
    logging = sys.modules.get("transformers.utils.logging")
    return (logging.get_verbosity(), logging.is_progress_bar_enabled()) if logging else None


def _set_hf(level: int, bars: bool | None) -> None:
    """transformers' log level, and its bars on or off (None: left as they are)."""
    logging = sys.modules.get("transformers.utils.logging")
    if logging:
        logging.set_verbosity(level)
        if bars is not None:
            (logging.enable_progress_bar if bars else logging.disable_progress_bar)()


def _datasets_state():
    datasets = sys.modules.get("datasets")
    return datasets.is_progress_bar_enabled() if datasets else None


def _set_datasets(enabled: bool) -> None:
    datasets = sys.modules.get("datasets")
    if datasets:
        (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
