"""Take the README's screenshot: the real window, a digit drawn with real mouse events.

    xvfb-run -s "-screen 0 1600x1000x24" python -m gui.screenshot docs/app.png
    xvfb-run -s "-screen 0 1366x768x24" python -m gui.screenshot docs/explain_unit.png --explain unit

Draws a "3" on the canvas through mouse press/move/release events, waits for the prediction,
shows a feature-map layer with one unit hovered (its receptive field lit on the 28x28 input),
turns on the side-by-side comparison when more than one architecture is found, and saves what
the display shows of the window. ``--explain`` shows the Explain tab instead: the overview, and
one unit's arithmetic (a unit clicked), the saliency (``--method``; ``--methods-strip`` saves all
five maps side by side), the robustness probes, the smallest flip or the nearest training digits.
``--image`` opens an image file instead of drawing (a letter: the novelty verdict).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from cnn_lightning.config import project_root


def three(side: int) -> list[tuple[int, int]]:
    """A handwritten-looking 3: two bowls that meet in the middle, as one stroke."""
    cx, top, mid, bottom = side * 0.48, side * 0.17, side * 0.49, side * 0.83
    r1, r2 = (mid - top) / 2, (bottom - mid) / 2
    # angle 0 is the top of each bowl; the upper one starts at its left and ends at the middle
    points = [(cx + 1.1 * r1 * math.sin(math.radians(a)), top + r1 - r1 * math.cos(math.radians(a)))
              for a in range(-70, 181, 18)]
    points += [(cx + 1.25 * r2 * math.sin(math.radians(a)), mid + r2 - r2 * math.cos(math.radians(a)))
               for a in range(0, 251, 18)]
    return [(int(x), int(y)) for x, y in points]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gui.screenshot")
    parser.add_argument("output", type=Path, nargs="?", default=Path(project_root()) / "docs" / "app.png")
    parser.add_argument("--outputs", type=Path, default=Path(project_root()) / "outputs")
    parser.add_argument("--layer", default="", help="feature-map layer to show (default: the app's choice)")
    parser.add_argument("--size", default="1440x860")
    parser.add_argument("--model", default="", help="architecture to show (default: the app's first)")
    parser.add_argument("--explain", choices=("overview", "unit", "saliency", "probes", "flip", "neighbours"),
                        default=None, help="show the Explain tab with this view")
    parser.add_argument("--method", default="", help="with --explain saliency: the method to show")
    parser.add_argument("--methods-strip", type=Path, default=None,
                        help="with --explain saliency: also save every method's map side by side here")
    parser.add_argument("--image", type=Path, default=None,
                        help="open this image file instead of drawing a 3 (a letter, say)")
    parser.add_argument("--unit", default="", help="with --explain unit: LAYER,CHANNEL,ROW,COL to click")
    parser.add_argument("--compare", action=argparse.BooleanOptionalAction, default=None,
                        help="side-by-side comparison (default: when more than one architecture is found)")
    args = parser.parse_args(argv)

    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from gui.style import apply_style
    from gui.window import MainWindow

    app = QApplication(sys.argv[:1])
    apply_style(app)
    window = MainWindow(outputs_root=args.outputs)
    width, height = (int(v) for v in args.size.split("x"))
    window.resize(width, height)
    window.move(0, 0)
    window.show()

    def spin(seconds: float, until=None) -> None:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline and not (until and until()):
            app.processEvents()
            time.sleep(0.005)

    spin(20, lambda: window.state not in ("starting", "loading"))
    if window.active is None:
        print(f"no model could be loaded from {args.outputs}: {window.state}", file=sys.stderr)
    if args.model:
        window.select_model(args.model)
        spin(20, lambda: window.active == args.model)
    if args.explain:
        window.right_column.show_explain(True)
    compare = args.compare if args.compare is not None else (len(window.entries) > 1 and not args.explain)
    if compare:
        window.compare_box.setChecked(True)
        spin(20, lambda: all(e.key in window.predictors or e.key in window.failures for e in window.entries))
    if args.layer:
        window.select_layer(args.layer)

    canvas = window.canvas
    if args.image is not None:
        window.open_image(args.image)
    else:
        points = three(canvas.width())
        QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(*points[0]))
        for point in points[1:]:
            QTest.mouseMove(canvas, QPoint(*point))
            spin(0.012)  # a hand's pace: live predictions come in while drawing
        QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(*points[-1]))
    request = window.inference.latest_request
    spin(20, lambda: window.last_outcome is not None and window.last_outcome.request == request)
    novelty = window.prediction_panel.novelty
    spin(240, lambda: novelty.novelty is not None)  # the first time: the detector is fitted

    grid = window.grid
    if args.explain:
        show_explanation(window.explain, args.explain, args.unit, spin, args.method)
        if args.methods_strip is not None:
            save_methods_strip(window.explain, args.methods_strip, spin)
    elif grid.count:  # hover one unit of one map: its receptive field lights up on the input
        height_, width_ = grid.map_shape
        QTest.mouseMove(grid, grid.unit_centre(min(1, grid.count - 1), height_ // 3, width_ // 2).toPoint())
    spin(0.5)

    screen = window.screen()
    frame = window.frameGeometry()
    image = screen.grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height())
    if image.isNull() or image.width() < 10:  # a platform that cannot read the screen back
        image = window.grab()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(args.output), "PNG"):
        print(f"could not write {args.output}", file=sys.stderr)
        return 1
    prediction = window.last_outcome.predictions.get(window.active) if window.last_outcome else None
    said = f"{prediction.label} ({prediction.confidence:.1%})" if prediction else "none"
    print(f"{args.output}: {image.width()}x{image.height()}, platform {app.platformName()}, "
          f"model {window.active}, prediction {said}")
    window.close()
    return 0


def save_methods_strip(panel, path: Path, spin) -> None:
    """Every saliency method's map of the drawing, picked in turn, grabbed and laid side by side."""
    from PySide6.QtGui import QImage, QPainter

    from cnn_lightning.attribution import SALIENCY_METHODS
    from gui.saliency import METHOD_NAMES

    combo, image = panel.saliency.method, panel.saliency.image
    shots = []
    for method in SALIENCY_METHODS:
        before = image.saliency
        combo.setCurrentIndex(combo.findData(method))
        spin(60, lambda before=before: image.saliency is not None and image.saliency is not before)
        spin(0.2)
        shots.append((METHOD_NAMES[method], image.grab().toImage()))
    side = min(min(shot.width(), shot.height()) for _, shot in shots)
    strip = QImage(len(shots) * (side + 10), side + 28, QImage.Format.Format_RGB32)
    strip.fill(0xFFFFFFFF)
    painter = QPainter(strip)
    for i, (name, shot) in enumerate(shots):
        x = i * (side + 10)
        square = shot.copy((shot.width() - side) // 2, (shot.height() - side) // 2, side, side)
        painter.drawImage(x, 0, square)
        painter.drawText(x, side + 4, side, 22, 0x84, name)  # AlignHCenter | AlignVCenter
    painter.end()
    strip.save(str(path), "PNG")


def show_explanation(panel, view: str, unit: str, spin, method: str = "") -> None:
    """Bring up one view of the Explain tab as a person would: click a unit, or click a tab."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    def click(widget, point) -> None:
        QTest.mouseClick(widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point.toPoint())

    if view == "unit":
        maps = [name for name, kind in panel.overview.stages if kind == "maps"]
        layer, channel, row, col = unit.split(",") if unit else (maps[0], "0", "", "")
        values = panel.overview.values_of(layer)
        row = int(row) if row else values.shape[1] // 2
        col = int(col) if col else values.shape[2] // 2
        click(panel.overview, panel.overview.unit_centre(layer, int(channel), row, col))
        spin(20, lambda: panel.unit_panel.unit is not None)
    elif view != "overview":
        from gui.explain_panel import TABS

        if method:
            panel.saliency.method.setCurrentIndex(panel.saliency.method.findData(method))
        bar = panel.tabs.tabBar()
        click(bar, bar.tabRect(TABS.index(view)).center().toPointF())
        done = {"saliency": lambda: panel.saliency.image.saliency is not None,
                "probes": lambda: panel.probes.charts["shift_x"].label_at_zero is not None,
                "flip": lambda: panel.flip.flip is not None,
                "neighbours": lambda: bool(panel.neighbours.strip.neighbours)}[view]
        spin(240, done)
    spin(0.5)


if __name__ == "__main__":
    sys.exit(main())
