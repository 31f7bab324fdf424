from nas.search.run import main

main()
