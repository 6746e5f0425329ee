from pyproglog.cli import main

main()
