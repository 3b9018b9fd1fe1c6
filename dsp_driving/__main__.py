"""python -m dsp_driving."""

import sys

from dsp_driving.cli import main

sys.exit(main())
