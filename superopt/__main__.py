import sys

from superopt.face.cli import main

sys.exit(main())
