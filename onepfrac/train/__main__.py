import sys

from onepfrac.train.cli import main

sys.exit(main())
