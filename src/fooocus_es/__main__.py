import sys

from fooocus_es.cli import main

sys.exit(main())
