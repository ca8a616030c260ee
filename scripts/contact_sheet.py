"""Regenerate docs/images/default_contact_sheet.jpg: frames of the README's main command, so a reader sees what
the default (embedded model, bundled portrait, weights-free renderer, natural idle face) produces.

It runs ``mmflow generate --text "Good morning, how are you today?"`` (the README command, into a temporary
folder), reads the video back and tiles the face in evenly spaced frames plus the frames where the eyes are
most closed and the mouth most open, each labelled with its frame number and the motion's mouth opening and
eyelid closure. A last row shows the same renderer turning the head as a pose-carrying template would (yaw and
pitch, rendered on the bundled portrait with a neutral face), which the README command itself never does.

    python scripts/contact_sheet.py                     # writes docs/images/default_contact_sheet.jpg
    python scripts/contact_sheet.py --out /tmp/sheet.jpg --tiles 16
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Good morning, how are you today?"
TILE = 256
TURNS = ((0.0, -15.0), (0.0, 15.0), (-12.0, 0.0), (12.0, 0.0))
"""(pitch, yaw) degrees of the head-pose row."""

logger = logging.getLogger("contact_sheet")


def pick_frames(opening: np.ndarray, closure: np.ndarray, tiles: int) -> list[int]:
    """Evenly spaced frames, with the most closed eyes and the widest mouth always among them."""
    count = len(opening)
    chosen = {int(np.argmax(closure)), int(np.argmax(opening))}
    for index in np.linspace(0, count - 1, tiles).round().astype(int):
        if len(chosen) >= tiles:
            break
        chosen.add(int(index))
    return sorted(chosen)


def turned_frames() -> np.ndarray:
    """The bundled portrait turned by :data:`TURNS` (a neutral face, as a template's head pose drives it)."""
    from mmflow_motion_liveportrait.face import demo_portrait_path
    from mmflow_motion_liveportrait.render import DrivingMotion, make_renderer

    count = len(TURNS) + 1  # the first frame is the unturned reference the pose is relative to
    pitch = np.array([0.0, *(p for p, _ in TURNS)])
    yaw = np.array([0.0, *(y for _, y in TURNS)])
    motion = DrivingMotion(exp=np.zeros((count, 21, 3)), pitch=pitch, yaw=yaw, roll=np.zeros(count))
    return make_renderer(demo_portrait_path()).render(motion, progress=False)[1:]


def face_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """A square around the face (dlib landmarks), 1.8 × their extent, inside the frame."""
    from mmflow_motion_liveportrait.face import default_detector

    landmarks = default_detector().detect(frame).landmarks
    centre = (landmarks.min(axis=0) + landmarks.max(axis=0)) / 2
    half = 0.9 * float((landmarks.max(axis=0) - landmarks.min(axis=0)).max())
    height, width = frame.shape[:2]
    half = min(half, centre[0], centre[1], width - centre[0], height - centre[1])
    return (int(centre[0] - half), int(centre[1] - half), int(centre[0] + half), int(centre[1] + half))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "default_contact_sheet.jpg")
    parser.add_argument("--tiles", type=int, default=12, help="frames on the sheet (4 per row)")
    args = parser.parse_args(argv)
    if args.tiles < 2:
        parser.error("--tiles must be at least 2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from mmflow_motion_liveportrait.expression_layout import BLINK, amount
    from mmflow_motion_liveportrait.motion_template import load_motion_template
    from mmflow_motion_liveportrait.render import mouth_opening_from_expression
    from mmflow_motion_liveportrait.video import read_video

    from mmflow.cli import main as mmflow_main
    from mmflow.io import atomic_path

    with tempfile.TemporaryDirectory() as folder:
        if mmflow_main(["generate", "--text", TEXT, "--out", folder, "--outputs", "npz,mp4"]) != 0:
            raise SystemExit("mmflow generate failed; see the messages above")
        frames = read_video(Path(folder) / "sample.mp4", read_audio=False).frames
        exp = load_motion_template(Path(folder) / "sample.npz").exp
    opening, closure = mouth_opening_from_expression(exp), np.clip(amount(exp, BLINK), 0, 1)
    left, top, right, bottom = face_box(frames[0])
    indices = pick_frames(opening, closure, args.tiles)
    tiles = [(frames[index], f"frame {index}  mouth {opening[index]:.2f}  eyes closed {closure[index]:.2f}")
             for index in indices]
    columns = 4
    tiles += [(None, "")] * (-len(tiles) % columns)  # the pose row starts on a row of its own
    tiles += [(frame, f"head pose: pitch {pitch:+.0f}°, yaw {yaw:+.0f}°")
              for frame, (pitch, yaw) in zip(turned_frames(), TURNS, strict=True)]
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    for slot, (frame, label) in enumerate(tiles):
        if frame is None:
            continue
        tile = Image.fromarray(frame[top:bottom, left:right]).resize((TILE, TILE), Image.LANCZOS)
        x, y = (slot % columns) * TILE, (slot // columns) * (TILE + 18)
        sheet.paste(tile, (x, y))
        draw.text((x + 4, y + TILE + 3), label, fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        sheet.save(tmp, format="JPEG", quality=88)
    logger.info("wrote %s (%d frames of %d, and %d head turns)", args.out, len(indices), len(frames), len(TURNS))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
