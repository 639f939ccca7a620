"""Tiles camstream's overlays into docs/methods_shapes.jpg: one row per sample picture,
one column per CAM method (README's method figure). Made with:

    for m in gradcam gradcam++ xgradcam hirescam elementwise layercam eigencam \
             eigengradcam scorecam ablationcam; do
      camstream image -m samples/models/shapes.toml --method $m samples/images/*.png -o /tmp/fig/$m
    done
    python3 docs/methods_figure.py /tmp/fig        # needs Pillow
"""
import sys
from pathlib import Path

from PIL import Image, ImageDraw

METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "elementwise", "layercam",
           "eigencam", "eigengradcam", "scorecam", "ablationcam"]
PICTURES = ["circle", "square", "triangle"]
root = Path(sys.argv[1])
tiles = {(m, p): Image.open(root / m / f"{p}.png").convert("RGB") for m in METHODS for p in PICTURES}
w, h = tiles[(METHODS[0], PICTURES[0])].size
tile = 160
cw, ch, top = tile, tile * h // w, 22
out = Image.new("RGB", (cw * len(METHODS), top + ch * len(PICTURES)), "white")
draw = ImageDraw.Draw(out)
for i, m in enumerate(METHODS):
    draw.text((i * cw + 4, 5), m, fill="black")
    for j, p in enumerate(PICTURES):
        out.paste(tiles[(m, p)].resize((cw, ch), Image.LANCZOS), (i * cw, top + j * ch))
out.save(Path(__file__).parent / "methods_shapes.jpg", quality=88)
