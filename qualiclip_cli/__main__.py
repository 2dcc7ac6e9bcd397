from qualiclip_cli.commands.app import main

main()
