"""The desktop drawing app (PySide6): draw a digit, see the prediction and every layer's feature
maps. Widgets, one panel per module, composed by ``window.py`` (docs/ARCHITECTURE.md); preprocessing
(``cnn_lightning.images``), prediction (``cnn_lightning.inference``) and checkpoints
(``cnn_lightning.checkpoints``) live in ``cnn_lightning``.

Start it with ``python -m gui`` (or ``make app``).
"""


def broken_qt_binding() -> str | None:
    """Why the installed PySide6 cannot run this app, or None when it can.

    PySide6 6.12.0 hands back ``True`` from ``Signal.emit`` (and drops references to ``None`` in
    slot calls) without counting the reference. From Python 3.12 on those objects are immortal
    and nothing happens; on 3.11 their count runs down and the process aborts within seconds
    ("Fatal Python error: bool_dealloc"). 6.11 is correct.
    """
    import sys

    import PySide6

    if PySide6.__version__ == "6.12.0" and sys.version_info < (3, 12):
        return (
            f"PySide6 {PySide6.__version__} crashes on Python {sys.version_info.major}.{sys.version_info.minor} "
            "(it miscounts references to True and None when signals are emitted). "
            "Install another release: pip install 'PySide6-Essentials>=6.6,<6.12'"
        )
    return None
