"""`superglue-ros weights list|download`: where the weight files are, and fetching them on request."""
from __future__ import annotations

import argparse

from . import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("weights", help="find or download the official weights",
                                   description="Find or download the official SuperPoint/SuperGlue weights "
                                               "(Magic Leap, non-commercial licence); list the bundled open models.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="show where each weight file is found, and the bundled models")
    listing.add_argument("--dir", help="folder to look in first")
    fetch = actions.add_parser("download", help="download and verify the three official files")
    fetch.add_argument("--dir", help="target folder (default: $SUPERGLUE_ROS_WEIGHTS_DIR or ~/.cache/superglue_ros)")
    fetch.add_argument("--base-url", help="alternative location of the files (a mirror)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference import weights

    if args.action == "list":
        print(listing(args.dir))
        return 0
    print(f"Downloading the official weights; {weights.LICENCE_NOTE}.")
    try:
        paths = weights.download(args.dir, base_url=args.base_url or weights.UPSTREAM_BASE_URL,
                                 progress=_progress_bar())
    except weights.WeightsError as error:
        raise CommandError(str(error)) from None
    for path in paths:
        print(f"ok {path}")
    return 0


def listing(folder: str | None) -> str:
    """Each official file (found and verified, damaged, or missing and where it was looked for), then the
    bundled open models, and which model ``--weights auto`` uses."""
    from ..inference import weights
    from ..inference.loading import official_available
    from ..inference.model_files import BUNDLED, BUNDLED_EXTRACTORS

    lines = []
    for name, spec in weights.OFFICIAL.items():
        try:
            path = weights.find_official(name, folder)
        except weights.WeightsError:
            lines.append(f"{name:15s} missing ({spec.filename}; looked in "
                         f"{', '.join(map(str, weights.search_dirs(folder)))})")
            continue
        state = "verified" if weights.verified(name, path) else \
            "DAMAGED: checksum differs (truncated or modified); run `superglue-ros weights download`"
        lines.append(f"{name:15s} {path} ({state})")
    for name, path in BUNDLED.items():
        state = "present" if path.is_file() else "MISSING"
        if BUNDLED_EXTRACTORS[name] == "xfeat":
            try:
                weights.xfeat_weights_path()
            except weights.WeightsError as error:
                state += f"; cannot run: {error}"
        lines.append(f"{name:15s} {path} (bundled open model, {state})")
    auto = "indoor (official)" if official_available(folder) else "sift_open (bundled; official weights not found)"
    lines.append(f"--weights auto uses: {auto}")
    return "\n".join(lines)


def _progress_bar():
    """A tqdm bar per file, fed by the downloader's (label, done, total) callback."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(label: str, done: int, total: int | None) -> None:
        bar = bars.get(label)
        if bar is None:
            bar = bars[label] = tqdm(total=total, desc=label, unit="B", unit_scale=True, leave=True)
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()

    return update
