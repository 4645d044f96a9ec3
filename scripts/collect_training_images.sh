#!/usr/bin/env bash
# Collect the openly licensed images the open SuperGlue model is trained on.
#
#   scripts/collect_training_images.sh [--more] DEST [PYTHON]
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
#
# --more adds about 58 photographs from the packages below, to DEST/train only
# (the held-out list stays the same). They are fetched with `apt-get download`
# and unpacked into a temporary folder, not installed: lomiri-wallpapers-20.04
# would add files to /usr/share/backgrounds (and so to the default set), and
# kphotoalbum, python3-skimage and python3-scipy would pull in many dependencies.
# Only the photographs named below are taken (no renderings, gradients or logos).
#   plasma-workspace-wallpapers  GPL-2+ (debian/copyright; per-wallpaper metadata: LGPL-3)
#   lxqt-themes              CC-BY-SA-3.0 (wallpapers/License; the photos credited there
#                            to stefonarch, the uncredited Valendas/cloud/Butterfly are left out)
#   lomiri-wallpapers-20.04  CC-BY-SA-3.0 (Kleiber_by_Lukas_Baubkus.jpg only)
#   palapeli-data            GPL-2+ (the five puzzle photographs in collection/)
#   kphotoalbum              GPL-2+ (debian/copyright; upstream .reuse/dep5: demo/*.jpg CC-BY-SA-4.0)
#   python3-skimage          BSD-3-Clause; the chosen images are CC0 or public domain
#                            (per skimage/data/_fetchers.py)
#   python3-scipy            BSD-3-Clause; misc face and ascent are public domain
#                            (per scipy/misc/_common.py)
set -euo pipefail

MORE=0
if [[ ${1:-} == --more ]]; then MORE=1; shift; fi
DEST=${1:?usage: $0 [--more] DEST [PYTHON]}
PYTHON=${2:-python3}
PACKAGES=(lomiri-wallpapers-16.04 mate-backgrounds opencv-doc)
OPENCV_DATA=/usr/share/doc/opencv-doc/examples/data
HELDOUT=(
  graf1.png graf3.png aero1.jpg aero3.jpg leuvenA.jpg leuvenB.jpg aloeL.jpg aloeR.jpg
  basketball1.png basketball2.png box.png box_in_scene.png home.jpg building.jpg stuff.jpg
  sunset_by_Aitzol_Berasategi.jpg Bridge_by_Sander_Klootwijk.jpg Garden.jpg Wood.jpg
)
# Not photographs of scenes (logos, text, charts, masks) or lower-resolution duplicates.
# Skipped: logos and masks, and the stereo chessboard views (left01.jpg ...), which are real pairs with a
# known pose for evaluation (`superglue-ros pairs real`); models before the 3D-scene release trained on them.
SKIP=(
  left01.jpg left02.jpg left03.jpg left04.jpg left05.jpg left06.jpg left07.jpg left08.jpg left09.jpg
  left11.jpg left12.jpg left13.jpg left14.jpg right01.jpg right02.jpg right03.jpg right04.jpg right05.jpg
  right06.jpg right07.jpg right08.jpg right09.jpg right11.jpg right12.jpg right13.jpg right14.jpg
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

if ((MORE)); then
  MORE_PACKAGES=(plasma-workspace-wallpapers lxqt-themes lomiri-wallpapers-20.04 palapeli-data
                 kphotoalbum python3-skimage python3-scipy)
  PLASMA_PHOTOS=(BytheWater ColdRipple ColorfulCups EveningGlow FallenLeaf Grey OneStandsOut Path summer_1am)
  LXQT_PHOTOS=(after-the-rain.jpg appleflower.png beam.png butterfly.png drop.png flowers.png fog.jpg
               this-is-not-windows.jpg)
  SKIMAGE_PHOTOS=(astronaut.png camera.png chelsea.png coffee.png rocket.jpg brick.png grass.png gravel.png
                  hubble_deep_field.jpg)
  EXTRA=$(mktemp -d)
  trap 'rm -rf "$EXTRA"' EXIT
  mkdir "$EXTRA/debs" "$EXTRA/root"
  APT_OPTS=()
  if [[ $(id -u) == 0 ]]; then
    SUDO=""
    APT_OPTS=(-o APT::Sandbox::User=root)  # _apt cannot write to the private temporary folder
  else
    SUDO=sudo
  fi
  if ! (cd "$EXTRA/debs" && apt-get "${APT_OPTS[@]}" download "${MORE_PACKAGES[@]}"); then
    $SUDO apt-get update
    (cd "$EXTRA/debs" && apt-get "${APT_OPTS[@]}" download "${MORE_PACKAGES[@]}")
  fi
  for deb in "$EXTRA"/debs/*.deb; do dpkg-deb -x "$deb" "$EXTRA/root"; done
  R=$EXTRA/root/usr

  for name in "${PLASMA_PHOTOS[@]}"; do  # the largest of the resolutions, named WxH.ext
    best="" best_pixels=0
    for file in "$R/share/wallpapers/$name/contents/images"/*x*.*; do
      size=$(basename "${file%.*}")
      pixels=$((${size%x*} * ${size#*x}))
      if ((pixels > best_pixels)); then best=$file best_pixels=$pixels; fi
    done
    cp "$best" "$DEST/train/plasma_$name.${best##*.}"
  done
  for name in "${LXQT_PHOTOS[@]}"; do cp "$R/share/lxqt/wallpapers/$name" "$DEST/train/lxqt_$name"; done
  cp "$R/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg" "$DEST/train/lomiri20_Kleiber_by_Lukas_Baubkus.jpg"
  for file in "$R"/share/palapeli/collection/*.jpg; do cp "$file" "$DEST/train/palapeli_$(basename "$file")"; done
  for file in "$R"/share/kphotoalbum/demo/*.jpg; do cp "$file" "$DEST/train/kphotoalbum_$(basename "$file")"; done
  for name in "${SKIMAGE_PHOTOS[@]}"; do
    cp "$R/lib/python3/dist-packages/skimage/data/$name" "$DEST/train/skimage_$name"
  done
  "$PYTHON" - "$R/lib/python3/dist-packages/scipy/misc" "$DEST/train/scipy_" <<'PY'
import bz2
import pickle
import sys
import cv2
import numpy as np
folder, prefix = sys.argv[1], sys.argv[2]
with open(f"{folder}/face.dat", "rb") as f:  # bz2-compressed raw RGB, 768x1024
    face = np.frombuffer(bz2.decompress(f.read()), dtype=np.uint8).reshape(768, 1024, 3)
cv2.imwrite(f"{prefix}face.png", face[:, :, ::-1])
with open(f"{folder}/ascent.dat", "rb") as f:  # pickled nested list, 512x512 grey
    ascent = np.array(pickle.load(f), dtype=np.uint8)
cv2.imwrite(f"{prefix}ascent.png", ascent)
PY
fi

echo "train: $(ls "$DEST/train" | wc -l) images, heldout: $(ls "$DEST/heldout" | grep -v xml | wc -l) images in $DEST"
