#!/usr/bin/env python3
"""Repeats a video's packets N times into one longer file, without re-encoding, so the
video benchmark can be run on a clip where start-up weighs less (issue 15's long-clip
rounds). Needs PyAV (`pip install av`) in the peers' virtualenv; the clip must start
with a key frame, as the bundled Big Buck Bunny does.

    python benches/peers/repeat_clip.py ../shared/assets/bigbuckbunny.mp4 4 /tmp/bbb4.mp4
"""
import sys

import av


def main(src, times, dst):
    out = av.open(dst, "w")
    ov = None
    offset = 0
    for _ in range(times):
        with av.open(src) as inp:
            vs = inp.streams.video[0]
            if ov is None:
                ov = out.add_stream_from_template(vs)
            end = offset
            for pkt in inp.demux(vs):
                if pkt.dts is None:  # the demuxer's flush packet
                    continue
                pkt.pts += offset
                pkt.dts += offset
                end = max(end, pkt.pts + (pkt.duration or 0))
                pkt.stream = ov
                out.mux(pkt)
            offset = end
    out.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
