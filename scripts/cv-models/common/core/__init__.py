"""Run plumbing every script shares: the UserError contract, CLI wrapper, atomic writes and run folders,
host facts."""
