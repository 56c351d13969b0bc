import sys

from gensched.cli import main

sys.exit(main())
