from romirecon.cli import main

main()
