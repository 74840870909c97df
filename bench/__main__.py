"""`python -m bench`: runwatch vs a raw asyncpg baseline under wrk; prints a table of ratios."""

import sys

from bench.harness import main

if __name__ == "__main__":
    sys.exit(main())
