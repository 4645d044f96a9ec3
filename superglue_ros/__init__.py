"""Real-time SuperPoint + SuperGlue image matching, with a ROS 2 front end."""
from .version import __version__
from .models.types import Features, MatchResult
from .inference.matcher import Matcher, PairMatch, PairRequest
from .models.sift import SIFT
from .models.superglue import SuperGlue
from .models.superpoint import SuperPoint

__all__ = ["__version__", "Features", "MatchResult", "Matcher", "PairMatch", "PairRequest", "SIFT", "SuperGlue",
           "SuperPoint"]
