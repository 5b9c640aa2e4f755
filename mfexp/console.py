"""A quiet console: known harmless third-party warnings, tips and loading bars are silenced, each narrowly (one
message of one module), so that a run shows its own log lines, one progress bar per long stage and the summary."""

from __future__ import annotations

import logging
import warnings

# (logger name, start of the message) of log records that tell a user nothing to act on
QUIET_RECORDS = (
    ("pytorch_lightning.utilities.rank_zero", "💡 Tip:"),  # litlogger / litmodels advertisements
    ("transformers.utils.import_utils", "`CLIPImageProcessor` requires torchvision"),  # torchvision is not used
    ("transformers.utils.import_utils", "`SiglipImageProcessor` requires torchvision"),
)
# (category, message regex, module regex) of warnings raised by third-party code, not by ours
QUIET_WARNINGS = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"pytorch_lightning\.utilities\._pytree"),
    # mmdet keeps frozen backbone stages and their norm layers in eval mode on purpose
    (
        UserWarning,
        r"Found \d+ module\(s\) in eval mode at the start of training",
        r"pytorch_lightning\.loops\.fit_loop",
    ),
    # train/ holds the stage's config.py and checkpoints beside Lightning's metrics.csv
    (UserWarning, r"Experiment logs directory .* exists and is not empty", r"lightning_fabric\.loggers\.csv_logs"),
)
NARRATING_LOGGERS = ("lvis",)  # lvis-api logs every index it builds at INFO


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_third_party() -> None:
    """Silence the notes above and the model-loading progress bars of diffusers and transformers (idempotent)."""
    for name in {name for name, _ in QUIET_RECORDS}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(tuple(p for n, p in QUIET_RECORDS if n == name)))
    for name in NARRATING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for category, message, module in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
