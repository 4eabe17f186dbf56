"""`python -m polycorn.ha.ctl`, as deploy/, loadtests/ and the tests run it."""

import sys

from polycorn.ha.ctl import main

sys.exit(main())
