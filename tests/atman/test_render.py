"""AtMan's HTML as a browser renders it: legend, scale, printed values, ``lang``, per-target-token views.

Reference: headless Chromium (Debian's ``chromium`` package) parses and lays out the page; the assertions read its
``--dump-dom`` output with the standard library's ``html.parser`` and its ``--screenshot`` PNG. Skipped with a reason
where no Chromium binary is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import zlib
from html.parser import HTMLParser

import pytest
import torch

from hf_ext.atman import AtManExplainer, Explanation
from hf_ext.atman.units import Unit
from hf_ext.testing import tiny_causal_lm

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on PATH (apt-get install chromium)")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]


class _Dom(HTMLParser):
    """Elements with their attributes, and per class the text inside each element of that class (nested included)."""

    def __init__(self):
        super().__init__()
        self.stack, self.elements, self.text_by_class = [], [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag not in ("meta", "br", "img", "input"):
            self.stack.append(attrs.get("class", ""))

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        for cls in set(self.stack):
            self.text_by_class.setdefault(cls, []).append(data)


def _rendered_dom(path) -> _Dom:
    out = subprocess.run([CHROMIUM, *_FLAGS, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = _Dom()
    dom.feed(out.stdout)
    return dom


def _png_rows(data: bytes):
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) into rows of pixel tuples."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big"), body[8], body[9]
            assert depth == 8 and ctype in (2, 6)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, rows, prev, stride = zlib.decompress(idat), [], bytearray(width * bpp), width * bpp
    for r in range(height):
        f, line = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[i:i + 3]) for i in range(0, stride, bpp)])
        prev = line
    return rows


@pytest.fixture(scope="module")
def explanation():
    from hf_ext.tiny import tiny_tokenizer

    ex = AtManExplainer(tiny_causal_lm("llama", seed=1), tiny_tokenizer(), progress=False)
    return ex.explain("a <b> cat sat", " on", granularity="word", foil=" in")


def test_html_structure_without_browser(explanation):
    html = explanation.to_html(lang="de")
    assert html.startswith("<!DOCTYPE html>") and "<html lang='de'>" in html and "&lt;b&gt;" in html
    frag = explanation._repr_html_()
    assert not frag.lstrip().startswith("<!DOCTYPE") and "<html" not in frag and "lang='en'" in frag
    with pytest.raises(ValueError, match="lang="):
        explanation.to_html(lang="en'><script>")


@needs_chromium
def test_rendered_dom_has_legend_scale_values_and_views(explanation, tmp_path):
    path = tmp_path / "exp.html"
    path.write_text(explanation.to_html(), encoding="utf-8")
    dom = _rendered_dom(path)
    html_tag = next(a for t, a in dom.elements if t == "html")
    assert html_tag.get("lang") == "en"
    legend = "".join(dom.text_by_class.get("legend", []))
    assert "Legend" in legend and "Negative values" in legend
    assert dom.text_by_class.get("lo") and dom.text_by_class.get("hi")  # the scale's end labels
    # every unit prints its value (not only a hover title): one per unit and view, matching −Δ of that view
    shown = [float(v) for v in dom.text_by_class["v"]]
    views = [a["data-view"] for t, a in dom.elements if t == "section"]
    T = len(explanation.target_tokens)
    assert views == ["all"] + [f"token-{t}" for t in range(T)]
    U = len(explanation.units)
    assert len(shown) == U * (T + 1)
    expected = (-explanation.scores()).tolist()
    for t in range(T):
        expected += (-explanation.delta[:, t]).tolist()
    assert shown == pytest.approx(expected, rel=5.1e-3, abs=1e-9)  # printed with 3 significant digits
    # readable without colour: the sign is also a pattern class on each unit
    signs = [a["class"].split()[1] for t, a in dom.elements if t == "span" and a.get("class", "").startswith("u ")]
    assert signs == ["pos" if v > 0 else "neg" if v < 0 else "zero" for v in expected]


@needs_chromium
def test_screenshot_is_not_blank(tmp_path):
    exp = Explanation(units=[Unit("a", [0], (0, 1)), Unit("b", [1], (2, 3))], delta=torch.tensor([[-2.0], [1.0]]),
                      target_tokens=["x"], base_cross_entropy=torch.ones(1), prompt="a b", target="x")
    path = tmp_path / "exp.html"
    path.write_text(exp.to_html(), encoding="utf-8")
    png = tmp_path / "shot.png"
    out = subprocess.run([CHROMIUM, *_FLAGS, f"--screenshot={png}", "--window-size=800,400", path.as_uri()],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and png.is_file(), out.stderr[-2000:]
    pixels = [p for row in _png_rows(png.read_bytes()) for p in row]
    # the strongest unit (value +2) is full red, the other (−1) half-transparent blue
    assert sum(1 for r, g, b in pixels if r > 200 and g < 60 and b < 60) > 20
    assert sum(1 for r, g, b in pixels if b > r + 40) > 20
    assert len(set(pixels)) > 20  # text and scale drawn, not a blank page
