from qualiclip_cli.commands.app import main

if __name__ == "__main__":
    main()
