"""The generation engine: typed requests in, images out. No global state lives here."""
