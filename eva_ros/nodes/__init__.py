"""One module per node; each has a small Node class and a `main()` console entry point."""
