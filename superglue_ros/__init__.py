"""Real-time SuperPoint + SuperGlue image matching, with a ROS 2 front end."""
from .features import Features, MatchResult
from .matcher import Matcher, PairMatch
from .superglue import SuperGlue
from .superpoint import SuperPoint

__all__ = ["Features", "MatchResult", "Matcher", "PairMatch", "SuperGlue", "SuperPoint"]
__version__ = "0.1.0"
