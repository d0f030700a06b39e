import sys

from dnsdisc.cli import main

sys.exit(main())
