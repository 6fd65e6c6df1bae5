import sys

from reconciler.app.cli import main

sys.exit(main())
