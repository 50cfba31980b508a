from cnnviz.cli.main import main

main()
