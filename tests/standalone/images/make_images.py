"""Writes the first ten MNIST test images as 8-bit grey PNGs (digit-I-LABEL.png).

Run from the repository root: python3 tests/standalone/images/make_images.py
(standard library only; reads data/mnist/t10k-*-ubyte.gz).
"""
import gzip
import struct
import zlib
from pathlib import Path

ROOT = Path("data/mnist")
OUT = Path(__file__).parent

def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

images = gzip.open(ROOT / "t10k-images-idx3-ubyte.gz").read()
labels = gzip.open(ROOT / "t10k-labels-idx1-ubyte.gz").read()
_, n, rows, cols = struct.unpack(">IIII", images[:16])
for i in range(10):
    start = 16 + i * rows * cols
    pixels = images[start:start + rows * cols]
    raw = b"".join(b"\x00" + pixels[r * cols:(r + 1) * cols] for r in range(rows))
    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9))
           + chunk(b"IEND", b""))
    (OUT / f"digit-{i}-{labels[8 + i]}.png").write_bytes(png)
