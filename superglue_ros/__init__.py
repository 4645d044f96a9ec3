"""Real-time SuperPoint + SuperGlue image matching, with a ROS 2 front end."""
from .features import Features, MatchResult
from .superglue import SuperGlue
from .superpoint import SuperPoint

__all__ = ["Features", "MatchResult", "SuperGlue", "SuperPoint"]
__version__ = "0.1.0"
