from losstrail.cli import main

main()
