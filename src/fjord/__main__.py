from fjord.cli import main

main()
