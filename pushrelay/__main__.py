import sys

from pushrelay.cli.main import main

sys.exit(main())
