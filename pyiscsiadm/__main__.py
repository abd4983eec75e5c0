import sys

from pyiscsiadm.main import main

sys.exit(main())
