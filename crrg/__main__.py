import sys

from crrg.cli import main

sys.exit(main())
