"""`python -m bikematch`: the command line where its installed script is not on PATH."""

from bikematch.app.cli import main

main()
