"""`superglue-ros weights list|download`: where the weight files are, and fetching them on request."""
from __future__ import annotations

import argparse

from . import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("weights", help="find or download the official weights",
                                   description="Find or download the official SuperPoint/SuperGlue weights "
                                               "(Magic Leap, non-commercial licence).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="show where each weight file is found")
    listing.add_argument("--dir", help="folder to look in first")
    fetch = actions.add_parser("download", help="download and verify the three official files")
    fetch.add_argument("--dir", help="target folder (default: $SUPERGLUE_ROS_WEIGHTS_DIR or ~/.cache/superglue_ros)")
    fetch.add_argument("--base-url", help="alternative location of the files (a mirror)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference import weights

    if args.action == "list":
        for name, spec in weights.OFFICIAL.items():
            try:
                print(f"{name:10s} {weights.find_official(name, args.dir)}")
            except weights.WeightsError:
                print(f"{name:10s} missing ({spec.filename}; looked in "
                      f"{', '.join(map(str, weights.search_dirs(args.dir)))})")
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
