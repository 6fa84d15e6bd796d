"""C{python -m dockerproxy.cache}: see L{dockerproxy.cache.admin}."""

import sys

from dockerproxy.cache.admin import main

sys.exit(main())
