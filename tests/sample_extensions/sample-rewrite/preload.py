def preload(parser):
    parser.add_argument("--sample-ext-flag", action="store_true", help="flag added by the sample extension")
