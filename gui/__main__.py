"""``python -m gui [--checkpoint PATH] [--outputs DIR]``: the drawing app."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnn_lightning.config import project_root


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gui",
        description="Draw a digit; see each trained net's prediction and its feature maps.",
    )
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint to open first (any .ckpt of this project)")
    parser.add_argument(
        "--outputs", type=Path, default=Path(project_root()) / "outputs",
        help="where to look for trained runs: the best checkpoint of each architecture (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gui import broken_qt_binding

    problem = broken_qt_binding()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    # Qt widgets are imported only now, so --help works without a display.
    from PySide6.QtWidgets import QApplication

    from gui.window import MainWindow, apply_style

    app = QApplication(sys.argv[:1])
    app.setApplicationName("cnn-lightning")
    apply_style(app)
    window = MainWindow(outputs_root=args.outputs, checkpoint=args.checkpoint)
    window.resize(1360, 820)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
