"""The one evaluation loop, the backend capability protocols it checks, the option vocabulary, and the
evaluators' CLI edge."""
