from cnnviz.cli.app import main

main()
