import sys

from nudiff.cli import main

sys.exit(main())
