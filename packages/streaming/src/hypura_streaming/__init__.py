"""Weight streaming: slot pools, direct I/O, expert cache, router interception."""
