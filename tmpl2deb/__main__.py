"""python3 -m tmpl2deb"""

from tmpl2deb.cli import main

raise SystemExit(main())
