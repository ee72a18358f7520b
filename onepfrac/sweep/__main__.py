import sys

from onepfrac.sweep.cli import main

sys.exit(main())
