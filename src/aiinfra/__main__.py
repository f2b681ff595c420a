from aiinfra.launcher.cli import main

main()
