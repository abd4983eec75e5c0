"""bench/results.png: one horizontal bar per metric, the ratio ours/in-kernel (> 1: ours better).

matplotlib when it is installed (the bench target installs it into the venv); otherwise a tiny
pure-Python PNG writer (zlib + a 5x7 bitmap font) draws the same chart, so there is always a PNG.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

Bars = list[tuple[str, float]]


def plot_ratios(bars: Bars, path: Path, title: str) -> str:
    """Draw the chart; return which plotter drew it ("matplotlib" or "builtin")."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path.write_bytes(builtin_png(bars, title))
        return "builtin"
    height = 1.2 + 0.28 * max(len(bars), 1)
    fig, ax = plt.subplots(figsize=(10, height))
    names = [b[0] for b in bars][::-1]
    vals = [b[1] for b in bars][::-1]
    colors = ["#2e7d32" if v >= 1 else "#c62828" for v in vals]
    ax.barh(names, vals, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=7)
    ax.set_xlabel("ratio (> 1: ours better)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlim(0, max([*vals, 1.0]) * 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "matplotlib"


# 5x7 glyphs, one 5-bit row per entry (bit 4 = leftmost pixel)
_FONT: dict[str, tuple[int, ...]] = {
    " ": (0, 0, 0, 0, 0, 0, 0),
    "0": (14, 17, 19, 21, 25, 17, 14),
    "1": (4, 12, 4, 4, 4, 4, 14),
    "2": (14, 17, 1, 2, 4, 8, 31),
    "3": (31, 2, 4, 2, 1, 17, 14),
    "4": (2, 6, 10, 18, 31, 2, 2),
    "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14),
    "7": (31, 1, 2, 4, 8, 8, 8),
    "8": (14, 17, 17, 14, 17, 17, 14),
    "9": (14, 17, 17, 15, 1, 2, 12),
    "a": (0, 0, 14, 1, 15, 17, 15),
    "b": (16, 16, 22, 25, 17, 17, 30),
    "c": (0, 0, 14, 16, 16, 17, 14),
    "d": (1, 1, 13, 19, 17, 17, 15),
    "e": (0, 0, 14, 17, 31, 16, 14),
    "f": (6, 9, 8, 28, 8, 8, 8),
    "g": (0, 15, 17, 17, 15, 1, 14),
    "h": (16, 16, 22, 25, 17, 17, 17),
    "i": (4, 0, 12, 4, 4, 4, 14),
    "j": (2, 0, 6, 2, 2, 18, 12),
    "k": (16, 16, 18, 20, 24, 20, 18),
    "l": (12, 4, 4, 4, 4, 4, 14),
    "m": (0, 0, 26, 21, 21, 17, 17),
    "n": (0, 0, 22, 25, 17, 17, 17),
    "o": (0, 0, 14, 17, 17, 17, 14),
    "p": (0, 0, 30, 17, 30, 16, 16),
    "q": (0, 0, 13, 19, 15, 1, 1),
    "r": (0, 0, 22, 25, 16, 16, 16),
    "s": (0, 0, 14, 16, 14, 1, 30),
    "t": (8, 8, 28, 8, 8, 9, 6),
    "u": (0, 0, 17, 17, 17, 19, 13),
    "v": (0, 0, 17, 17, 17, 10, 4),
    "w": (0, 0, 17, 17, 21, 21, 10),
    "x": (0, 0, 17, 10, 4, 10, 17),
    "y": (0, 0, 17, 17, 15, 1, 14),
    "z": (0, 0, 31, 2, 4, 8, 31),
    ".": (0, 0, 0, 0, 0, 12, 12),
    "_": (0, 0, 0, 0, 0, 0, 31),
    "-": (0, 0, 0, 31, 0, 0, 0),
    ":": (0, 12, 12, 0, 12, 12, 0),
    "(": (2, 4, 8, 8, 8, 4, 2),
    ")": (8, 4, 2, 2, 2, 4, 8),
    ">": (8, 4, 2, 1, 2, 4, 8),
    "/": (0, 1, 2, 4, 8, 16, 0),
    "?": (14, 17, 1, 2, 4, 0, 4),
}

_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_GREEN = (46, 125, 50)
_RED = (198, 40, 40)
_GREY = (200, 200, 200)


class _Canvas:
    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.px = [bytearray(_WHITE * w) for _ in range(h)]

    def rect(self, x0: int, y0: int, x1: int, y1: int, rgb: tuple[int, int, int]) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.w, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.h, max(y0, y1))
        for y in range(y0, y1):
            self.px[y][3 * x0 : 3 * x1] = bytes(rgb) * (x1 - x0)

    def text(self, x: int, y: int, s: str) -> None:
        for ch in s.lower():
            rows = _FONT.get(ch, _FONT["?"])
            for dy, bits in enumerate(rows):
                for dx in range(5):
                    if bits & (16 >> dx):
                        self.rect(x + dx, y + dy, x + dx + 1, y + dy + 1, _BLACK)
            x += 6

    def png(self) -> bytes:
        raw = b"".join(b"\0" + bytes(row) for row in self.px)

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        ihdr = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def builtin_png(bars: Bars, title: str) -> bytes:
    """The chart as PNG bytes without any third-party module."""
    label_w = 6 * max([len(b[0]) for b in bars] + [10]) + 10
    plot_w, row_h, top = 480, 12, 30
    w, h = label_w + plot_w + 60, top + row_h * max(len(bars), 1) + 30
    c = _Canvas(w, h)
    c.text(8, 8, title[: (w - 16) // 6])
    top_val = max([b[1] for b in bars] + [1.0]) * 1.1
    scale = plot_w / top_val
    one = label_w + round(scale)
    for i, (name, v) in enumerate(bars):
        y = top + i * row_h
        c.text(4, y + 2, name)
        c.rect(
            label_w, y + 2, label_w + round(v * scale), y + row_h - 1, _GREEN if v >= 1 else _RED
        )
        c.text(label_w + round(v * scale) + 3, y + 2, f"{v:.2f}")
    c.rect(one, top - 4, one + 1, h - 24, _BLACK)
    c.rect(label_w, h - 24, label_w + plot_w, h - 23, _GREY)
    c.text(one - 9, h - 18, "1.0")
    c.text(label_w, h - 10, "ratio (>1: ours better)")
    return c.png()
