"""The parts on their own: parsers, the store, the SSH and nix runners, texts and limits."""
