"""``python -m gui [--checkpoint PATH] [--outputs DIR]``: the drawing app."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gui",
        description="Draw a digit; see each trained net's prediction and its feature maps.",
    )
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint to open first (any .ckpt of this project)")
    parser.add_argument(
        "--outputs", type=Path, default=None,
        help="where to look for trained runs, for the best checkpoint of each architecture "
             "(default: outputs/ in the project)",
    )
    # One line on a bad command line, not usage + error (argparse's default).
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: {message}\n")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, in one line, or None: before any window opens."""
    if args.outputs is not None and not args.outputs.is_dir():
        return f"--outputs {args.outputs}: no such directory"
    if args.checkpoint is not None:
        from cnn_lightning.checkpoints import CheckpointError, load_model

        try:
            load_model(args.checkpoint)  # bounded, and small: the whole check, before any window
        except CheckpointError as err:
            return f"--checkpoint {err}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"python -m gui: {problem}", file=sys.stderr)
        return 2
    # torch and Qt are imported only now, so --help answers at once and without a display.
    from gui import broken_qt_binding

    problem = broken_qt_binding()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    from cnn_lightning.config import project_root
    from gui.style import apply_style
    from gui.window import MainWindow

    app = QApplication(sys.argv[:1])
    app.setApplicationName("cnn-lightning")
    apply_style(app)
    outputs = args.outputs or Path(project_root()) / "outputs"
    window = MainWindow(outputs_root=outputs, checkpoint=args.checkpoint)
    screen = app.primaryScreen().availableGeometry() if app.primaryScreen() else None
    # as large as the panels like, but never past the screen (the window scrolls on a small one)
    window.resize(min(1360, screen.width()) if screen else 1360, min(820, screen.height()) if screen else 820)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
