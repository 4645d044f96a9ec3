"""`python -m superglue_ros` is the `superglue-ros` command."""
import sys

from .cli.main import main

sys.exit(main())
