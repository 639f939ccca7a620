"""Writes the seed corpus of each fuzz target (small valid files of every kind the
parsers take). Run with any Python 3 that has numpy; the .pth seed needs torch.
    python3 fuzz/make_seeds.py
"""
import io, os, struct, sys, wave
import numpy as np

root = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(root)

def put(target, name, data):
    d = os.path.join(root, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

t = np.arange(64) / 8000.0
x = 0.5 * np.sin(2 * np.pi * 440 * t)
for bits in (8, 16, 24, 32):
    b = io.BytesIO()
    with wave.open(b, "wb") as w:
        w.setnchannels(1 if bits != 16 else 2)
        w.setsampwidth(bits // 8)
        w.setframerate(8000)
        if bits == 8:
            w.writeframes(((x + 1) * 127).astype(np.uint8).tobytes())
        elif bits == 16:
            w.writeframes(np.repeat((x * 32767).astype("<i2"), 2).tobytes())
        elif bits == 24:
            v = (x * 8388607).astype("<i4")
            w.writeframes(b"".join(int(s).to_bytes(3, "little", signed=True) for s in v))
        else:
            w.writeframes((x * 2**31 * 0.99).astype("<i4").tobytes())
    put("wav", f"pcm{bits}.wav", b.getvalue())

put("csv", "time.csv", ("time_s,MLII,V5\n" + "".join(f"{i/360:.5f},{np.sin(i/9):.4f},{np.cos(i/7):.4f}\n" for i in range(40))).encode())
put("csv", "plain.csv", ("".join(f"{np.sin(i/5):.4f}\n" for i in range(40))).encode())
put("csv", "tabs.tsv", ("a\tb\n" + "".join(f"{i}\t{-i}\n" for i in range(20))).encode())

def npy(a):
    b = io.BytesIO(); np.save(b, a); return b.getvalue()
put("npy", "l.npy", npy(np.sin(np.arange(50, dtype=np.float32))))
put("npy", "cl.npy", npy(np.ones((2, 30), np.float32)))
put("npy", "ncl.npy", npy(np.zeros((2, 1, 16), np.float32)))
put("npy", "f8.npy", npy(np.arange(20, dtype=np.float64)))

samples = np.round(np.sin(np.arange(20) / 3) * 500).astype(int)
def fmt212(v):
    out = bytearray()
    for i in range(0, len(v), 2):
        a, b = v[i] & 0xFFF, (v[i + 1] if i + 1 < len(v) else 0) & 0xFFF
        out += bytes([a & 0xFF, ((a >> 8) & 0x0F) | ((b >> 4) & 0xF0), b & 0xFF])
    return bytes(out)
put("wfdb", "f212", b"rec 1 360 20\nrec.dat 212 200 11 1024 0 0 0 MLII\n\0" + fmt212(samples))
put("wfdb", "f16", b"rec 2 250 10\nrec.dat 16 100 16 0 0 0 0 I\nrec.dat 16 100 16 0 0 0 0 II\n\0"
    + np.repeat(samples[:10], 2).astype("<i2").tobytes())

def copy(target, src):
    with open(os.path.join(repo, src), "rb") as f:
        put(target, os.path.basename(src), f.read())

for name in ("shapes.toml", "ecg.toml", "audio.toml"):
    copy("toml_config", "samples/models/" + name)
copy("toml_config", "tests/fixtures/tinyres/tinyres.toml")

def safetensors(tensors):
    import json
    header, blobs, off = {}, b"", 0
    for k, a in tensors.items():
        raw = a.astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs += raw; off += len(raw)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blobs
put("safetensors", "two.safetensors", safetensors({"conv.weight": np.ones((2, 1, 3, 3)), "fc.bias": np.zeros(3)}))
copy("safetensors", "tests/fixtures/tinyres/tinyres.safetensors")

try:
    import torch
    b = io.BytesIO()
    torch.save({"conv.weight": torch.ones(2, 1, 3, 3), "fc.bias": torch.zeros(3, dtype=torch.float64)}, b)
    put("pth", "small.pth", b.getvalue())
except ImportError:
    print("no torch: pth seed not written", file=sys.stderr)

copy("onnx", "tests/fixtures/tinyres/tinyres.onnx")
