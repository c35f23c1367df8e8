"""`python -m ganforge.reproduce ...`: the same as the `ganforge-reproduce` console command."""

from ganforge.reproduce import main

main()
