from tipcshm.cli.main import main

main()
