#!/usr/bin/env bash
# Collect the openly licensed images the open SuperGlue model is trained on.
#
#   scripts/collect_training_images.sh DEST [PYTHON]
#
# Installs the Debian/Ubuntu packages when they are missing (needs apt and
# root or sudo), then copies their images into DEST/train and DEST/heldout.
# The held-out split is a fixed list of names below, chosen so that no image
# of a stereo/sequence pair leaks into training; graf1/graf3 (with their
# ground-truth homography H1to3p.xml) always stay out of training.
# Licences (see /usr/share/doc/<package>/copyright):
#   lomiri-wallpapers-16.04  CC-BY-4.0 / CC-BY-SA-4.0 photographs
#   mate-backgrounds         GPL-2+
#   opencv-doc               Apache-2.0 AND BSD-3-Clause (examples/data, incl. videos)
set -euo pipefail

DEST=${1:?usage: $0 DEST [PYTHON]}
PYTHON=${2:-python3}
PACKAGES=(lomiri-wallpapers-16.04 mate-backgrounds opencv-doc)
OPENCV_DATA=/usr/share/doc/opencv-doc/examples/data
HELDOUT=(
  graf1.png graf3.png aero1.jpg aero3.jpg leuvenA.jpg leuvenB.jpg aloeL.jpg aloeR.jpg
  basketball1.png basketball2.png box.png box_in_scene.png home.jpg building.jpg stuff.jpg
  sunset_by_Aitzol_Berasategi.jpg Bridge_by_Sander_Klootwijk.jpg Garden.jpg Wood.jpg
)
# Not photographs of scenes (logos, text, charts, masks) or lower-resolution duplicates.
SKIP=(
  LinuxLogo.jpg WindowsLogo.jpg opencv-logo.png opencv-logo-white.png mask.png gradient.png
  digits.png notes.png imageTextN.png imageTextR.png alphabet_36.txt ml.png
  Elephants_3840x2160.jpg Elephants_5640x3172.jpg
)
VIDEOS=(vtest.avi tree.avi Megamind.avi)
FRAMES_PER_VIDEO=6

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=$([[ $(id -u) == 0 ]] && echo "" || echo sudo)
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

mkdir -p "$DEST/train" "$DEST/heldout"
in_list() { local name=$1; shift; for item in "$@"; do [[ $item == "$name" ]] && return 0; done; return 1; }

copy_image() {  # copy_image FILE PREFIX
  local name; name=$(basename "$1")
  in_list "$name" "${SKIP[@]}" && return 0
  local split=train
  in_list "$name" "${HELDOUT[@]}" && split=heldout
  cp "$1" "$DEST/$split/$2$name"
}

for file in /usr/share/backgrounds/*.jpg; do copy_image "$file" lomiri_; done
for file in /usr/share/backgrounds/mate/*/*.jpg /usr/share/backgrounds/mate/*/*.png; do copy_image "$file" mate_; done
for file in "$OPENCV_DATA"/*.jpg "$OPENCV_DATA"/*.png; do copy_image "$file" opencv_; done
cp "$OPENCV_DATA/H1to3p.xml" "$DEST/heldout/opencv_H1to3p.xml"

for video in "${VIDEOS[@]}"; do
  "$PYTHON" - "$OPENCV_DATA/$video" "$DEST/train/opencv_${video%.avi}" "$FRAMES_PER_VIDEO" <<'PY'
import sys
import cv2
path, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
capture = cv2.VideoCapture(path)
total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
for k in range(count):
    capture.set(cv2.CAP_PROP_POS_FRAMES, k * total // count)
    ok, frame = capture.read()
    if ok:
        cv2.imwrite(f"{prefix}_{k:02d}.png", frame)
PY
done

echo "train: $(ls "$DEST/train" | wc -l) images, heldout: $(ls "$DEST/heldout" | grep -v xml | wc -l) images in $DEST"
