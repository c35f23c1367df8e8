"""`python -m ganforge.report ...`: the same as the `ganforge-report` console command."""

from ganforge.report import main

main()
