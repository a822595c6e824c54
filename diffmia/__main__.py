from diffmia.cli import main

main()
