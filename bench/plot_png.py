"""Line plots as PNG with Pillow only (the project does not depend on matplotlib).

  line_plot(path, {"model": [(step, value), ...], "PCA-32": [(0, v), (600, v)]},
            title="held-out PSNR", x_label="step", y_label="dB")
"""
from __future__ import annotations

from PIL import Image, ImageDraw

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
           (23, 190, 207))


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
  if hi <= lo:
    return [lo]
  if float(lo).is_integer() and float(hi).is_integer() and hi - lo < 10:
    return [float(v) for v in range(int(lo), int(hi) + 1)]  # e.g. stages 1-4
  return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def line_plot(path: str, series: dict[str, list[tuple[float, float]]], title: str = "",
              x_label: str = "", y_label: str = "", size=(720, 420), dashed=()) -> str:
  """Draws each series (name -> [(x, y)]) as a line with dots; names in `dashed` dashed."""
  w, h = size
  left, right, top, bottom = 70, 170, 36, 50
  img = Image.new("RGB", size, "white")
  d = ImageDraw.Draw(img)
  xs = [x for pts in series.values() for x, _ in pts]
  ys = [y for pts in series.values() for _, y in pts]
  x0, x1 = min(xs), max(xs)
  pad = 0.05 * (max(ys) - min(ys) or 1.0)
  y0, y1 = min(ys) - pad, max(ys) + pad
  px = lambda x: left + (x - x0) / ((x1 - x0) or 1.0) * (w - left - right)
  py = lambda y: h - bottom - (y - y0) / ((y1 - y0) or 1.0) * (h - top - bottom)
  d.rectangle([left, top, w - right, h - bottom], outline="black")
  for t in _ticks(x0, x1):
    d.line([px(t), h - bottom, px(t), h - bottom + 4], fill="black")
    d.text((px(t) - 12, h - bottom + 6), f"{t:.0f}", fill="black")
  for t in _ticks(y0, y1):
    d.line([left - 4, py(t), left, py(t)], fill="black")
    d.line([left, py(t), w - right, py(t)], fill=(230, 230, 230))
    d.text((8, py(t) - 6), f"{t:.2f}", fill="black")
  d.text((left, 10), title, fill="black")
  d.text(((w - right + left) // 2 - 20, h - 18), x_label, fill="black")
  d.text((8, top - 18), y_label, fill="black")
  for k, (name, pts) in enumerate(series.items()):
    colour = COLOURS[k % len(COLOURS)]
    pts = sorted(pts)
    for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
      if name in dashed:  # 12 dashes per segment
        for i in range(0, 12, 2):
          f0, f1 = i / 12, (i + 1) / 12
          d.line([px(xa + (xb - xa) * f0), py(ya + (yb - ya) * f0),
                  px(xa + (xb - xa) * f1), py(ya + (yb - ya) * f1)], fill=colour, width=2)
      else:
        d.line([px(xa), py(ya), px(xb), py(yb)], fill=colour, width=2)
    for x, y in pts:
      if name not in dashed:
        d.ellipse([px(x) - 3, py(y) - 3, px(x) + 3, py(y) + 3], fill=colour)
    ly = top + 8 + 18 * k
    d.line([w - right + 10, ly + 6, w - right + 30, ly + 6], fill=colour, width=3)
    d.text((w - right + 36, ly), name, fill="black")
  img.save(path)
  return path
