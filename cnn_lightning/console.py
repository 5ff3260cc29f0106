"""What a run prints: the project's own lines, one progress bar, and none of the libraries' noise.

Lightning prints a few lines the project cannot switch off through any setting; each filter below
names the one it removes and why it cannot be fixed at the cause. Everything else (warnings about
the user's own config, errors) still reaches the console.
"""

from __future__ import annotations

import logging
import warnings

_RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"


class LibraryNoise(logging.Filter):
    """Drops Lightning's advertisement and its repeated loop-exit line."""

    def __init__(self) -> None:
        super().__init__()
        self._said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # Lightning's logger connector prints this for every Trainer without a LitLogger; no
        # argument turns it off (lightning 2.6, logger_connector.py).
        if message.startswith("💡 Tip:"):
            return False
        # FitLoop.done logs its reason every time it is asked, which is more than once per fit.
        if message.startswith("`Trainer.fit` stopped"):
            if message in self._said:
                return False
            self._said.add(message)
        return True


def quiet_libraries() -> None:
    """Install the filters (idempotent). Call once when an entry point is imported."""
    # torch 2.14 deprecated LeafSpec, which Lightning 2.6's CombinedLoader still builds for every
    # loader (lightning/pytorch/utilities/_pytree.py); the warning is about library code, not ours.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    logger = logging.getLogger(_RANK_ZERO_LOGGER)
    if not any(isinstance(f, LibraryNoise) for f in logger.filters):
        logger.addFilter(LibraryNoise())
