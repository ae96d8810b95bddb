"""A strip of frames from an evaluation video, for the docs (docs/evaluate.md).

    python scripts/video_frames.py RUN_DIR/videos/.../eval-episode-0.mp4 docs/eval-Hopper-v5.png \
        [--frames 5] [--title "..."]
"""

from __future__ import annotations

import argparse

import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    frames = iio.imread(args.video)
    n, k = len(frames), args.frames
    picks = [round((n - 1) * i / (k - 1)) for i in range(k)] if k > 1 else [0]
    fig, axes = plt.subplots(1, k, figsize=(3 * k, 3.4), squeeze=False)
    for ax, i in zip(axes[0], picks, strict=True):
        ax.imshow(frames[i])
        ax.set_axis_off()
        ax.set_title(f"step {i} of {n - 1}", fontsize=9)
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(args.out)


if __name__ == "__main__":
    main()
