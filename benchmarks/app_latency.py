"""The drawing app's responsiveness, measured on the real window with real mouse events.

    python benchmarks/app_latency.py                      # every architecture under outputs/
    python benchmarks/app_latency.py --checkpoint X.ckpt  # one checkpoint
    python benchmarks/app_latency.py --strokes 10 --frames 200   # a quick check
    python benchmarks/app_latency.py --overview           # with the Explain tab's overview on screen

Per net:
- model time: one preprocessed 28x28 image through the net with every feature map captured
  (``Predictor.predict_input``, on the inference thread's single torch thread), timed alone;
- stroke to screen: from the mouse release that ends a stroke to the window repainted with the
  new probabilities and feature-map grid (worker thread preprocesses and predicts, the GUI thread
  shows the result, then one synchronous repaint of the whole window);
- frame rate while drawing: mouse moves sent as fast as the GUI thread takes them while live
  predictions run; a frame is one move handled and the canvas repainted. Goal: >= 30 fps, and no
  frame much slower than the rest (the GUI thread never waits for the net).

Runs offscreen unless a display is set. Prints the figures and writes
``benchmarks/results/app_latency.json`` (``app_latency_overview.json`` with ``--overview``).
Goals: model time <= 5 ms, >= 30 fps.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from common import ROOT, describe, machine, write_result  # noqa: E402
from PySide6.QtCore import QEvent, QObject, QPoint, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from cnn_lightning.images import preprocess  # noqa: E402
from gui.style import apply_style  # noqa: E402
from gui.window import MainWindow  # noqa: E402

MODEL_GOAL_MS = 5.0
FPS_GOAL = 30.0


class PaintCounter(QObject):
    """Counts the paint events a widget really gets."""

    def __init__(self, widget):
        super().__init__(widget)
        self.count = 0
        widget.installEventFilter(self)

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Paint:
            self.count += 1
        return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "p95": round(percentile(values, 95), 3),
            "max": round(max(values), 3), "n": len(values)}


def wait_for(app: QApplication, condition, timeout: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        time.sleep(0.0005)


def stroke_points(i: int, side: int) -> list[tuple[int, int]]:
    """A digit-sized loop (a zero), a little different each time."""
    cx, cy, r = side / 2 + (i % 5) * 3, side / 2 - (i % 3) * 3, side * 0.3
    return [(int(cx + 0.6 * r * math.sin(t / 12 * 2 * math.pi)), int(cy - r * math.cos(t / 12 * 2 * math.pi)))
            for t in range(13)]


def press(canvas, point):
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(*point))


def release(canvas, point):
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(*point))


def measure(app: QApplication, window: MainWindow, key: str, strokes: int, frames: int, repeats: int) -> dict:
    window.select_model(key)
    wait_for(app, lambda: window.active == key and window.state in ("ready", "empty-canvas"))
    predictor = window.predictors[key]
    canvas = window.canvas
    side = canvas.width()

    # Model time alone, on a real drawing.
    canvas.clear()
    canvas.draw_stroke(stroke_points(0, side))
    x = preprocess(canvas.to_array())
    for _ in range(20):
        predictor.predict_input(x)
    model = [predictor.predict_input(x).model_ms for _ in range(repeats)]

    # Stroke to screen.
    shown: dict[int, float] = {}
    window.predictionShown.connect(lambda outcome: shown.setdefault(outcome.request, time.perf_counter()))
    total, to_shown, worker_model, worker_pre = [], [], [], []
    for i in range(strokes):
        window.clear()
        points = stroke_points(i, side)
        press(canvas, points[0])
        for point in points[1:]:
            QTest.mouseMove(canvas, QPoint(*point))
        app.processEvents()
        started = time.perf_counter()
        release(canvas, points[-1])  # ends the stroke: the window posts the request at once
        request = window.inference.latest_request
        wait_for(app, lambda request=request: request in shown)
        to_shown.append((shown[request] - started) * 1000)
        window.repaint()  # the new bars and grid on screen
        total.append((time.perf_counter() - started) * 1000)
        outcome = window.last_outcome
        worker_model.append(outcome.predictions[key].model_ms)
        worker_pre.append(outcome.preprocess_ms)

    # GUI-thread work per result: labels, bars, the feature-map grid rendered, then painted.
    gui_ms = []
    for _ in range(50):
        t0 = time.perf_counter()
        window._on_outcome(outcome)
        window.repaint()
        gui_ms.append((time.perf_counter() - t0) * 1000)

    # Frames while drawing, live predictions on: mouse moves at 250 Hz (a fast mouse) for
    # ``frames`` moves; a frame is one move handled and the canvas repainted.
    window.clear()
    app.processEvents()
    painted = PaintCounter(canvas)
    frame_ms, results_before = [], len(shown)
    path = [(int(side / 2 + side * 0.35 * math.cos(t / 40)), int(side / 2 + side * 0.35 * math.sin(t / 23)))
            for t in range(frames + 1)]
    press(canvas, path[0])
    app.processEvents()
    paints_before = painted.count
    period = 1 / 250
    started = time.perf_counter()
    for n, point in enumerate(path[1:], start=1):
        t0 = time.perf_counter()
        QTest.mouseMove(canvas, QPoint(*point))
        app.processEvents()  # paints the canvas, and shows any prediction that came back
        frame_ms.append((time.perf_counter() - t0) * 1000)
        while time.perf_counter() < started + n * period:
            app.processEvents()
            time.sleep(0.0002)
    elapsed = time.perf_counter() - started
    repaints = painted.count - paints_before
    release(canvas, path[-1])
    wait_for(app, lambda: window.inference.latest_request in shown)
    return {
        "net": predictor.architecture,
        "params": predictor.params,
        "checkpoint": str(predictor.checkpoint),
        "model_ms": summary(model),
        "model_ms_in_app": summary(worker_model),
        "preprocess_ms_in_app": summary(worker_pre),
        "stroke_to_shown_ms": summary(to_shown),
        "stroke_to_screen_ms": summary(total),
        "gui_thread_ms_per_result": summary(gui_ms),
        "drawing": {
            "mouse_moves_per_s": 250,
            "frames": len(frame_ms),
            "fps": round(repaints / elapsed, 1),
            "canvas_repaints_per_s": round(repaints / elapsed, 1),
            "frame_ms": summary(frame_ms),
            "predictions_shown_while_drawing": len(shown) - results_before,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outputs", type=Path, default=ROOT / "outputs")
    parser.add_argument("--checkpoint", type=Path, action="append", default=[])
    parser.add_argument("--strokes", type=int, default=30, help="timed strokes per net")
    parser.add_argument("--frames", type=int, default=600, help="mouse moves in the drawing test")
    parser.add_argument("--repeats", type=int, default=300, help="timed forward passes per net")
    parser.add_argument("--overview", action="store_true",
                        help="show the Explain tab: the all-layers overview repaints with every prediction")
    args = parser.parse_args()

    started_machine = machine()
    app = QApplication(sys.argv[:1])
    apply_style(app)
    window = MainWindow(outputs_root=args.outputs, checkpoint=args.checkpoint[0] if args.checkpoint else None)
    window.resize(1360, 820)
    window.right_column.show_explain(args.overview)
    window.show()
    wait_for(app, lambda: window.state not in ("starting", "loading"))
    keys = [e.key for e in window.entries]
    if not keys:
        print(f"No trained model under {args.outputs}: train one first (make train).")
        return 1
    started_machine["torch_threads"] = __import__("torch").get_num_threads()  # the app sets 1
    print(f"Machine: {describe(started_machine)}")
    print(f"Qt platform: {app.platformName()}" + (", the overview on screen" if args.overview else ""))
    results = {}
    for key in keys:
        try:
            results[window.models.entry(key).name] = measure(app, window, key, args.strokes, args.frames, args.repeats)
        except TimeoutError as err:
            print(f"{key}: {err}")
    window.close()

    header = (f"{'net':<14}{'params':>10}  {'model ms':>8}  {'in app':>7}  {'stroke→screen ms':>16}  "
              f"{'GUI ms/result':>13}  {'fps drawing':>11}  {'worst frame ms':>14}")
    print("medians (p95)")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        d = r["drawing"]
        print(f"{name:<14}{r['params']:>10,}  {r['model_ms']['median']:>8.2f}  {r['model_ms_in_app']['median']:>7.2f}"
              f"  {r['stroke_to_screen_ms']['median']:>7.1f} ({r['stroke_to_screen_ms']['p95']:>5.1f})"
              f"  {r['gui_thread_ms_per_result']['median']:>13.1f}  {d['fps']:>11.0f}  {d['frame_ms']['max']:>14.1f}")
    ok_model = all(r["model_ms"]["median"] <= MODEL_GOAL_MS for r in results.values())
    ok_fps = all(r["drawing"]["fps"] >= FPS_GOAL for r in results.values())
    print(f"Goals: model time <= {MODEL_GOAL_MS} ms: {'met' if ok_model else 'NOT met'}; "
          f">= {FPS_GOAL:.0f} fps while drawing: {'met' if ok_fps else 'NOT met'}")
    path = write_result("app_latency_overview" if args.overview else "app_latency", {
        "qt_platform": app.platformName(),
        "overview_visible": args.overview,
        "goals": {"model_ms": MODEL_GOAL_MS, "fps": FPS_GOAL, "model_met": ok_model, "fps_met": ok_fps},
        "nets": results,
    }, started_machine)
    print(f"Written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
