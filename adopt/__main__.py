"""`python3 -I -m adopt`: the form pam.d runs the hook in (isolated: no PYTHON* variable, no user site,
no current directory on the path can change what runs as root)."""

import sys

from adopt.hook import main

sys.exit(main())
