"""python -m pyiscsid: run iscsid."""

import sys

from pyiscsid.daemon import main

sys.exit(main())
