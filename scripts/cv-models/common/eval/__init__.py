"""The one evaluation pipeline, the backend capability protocols it checks, and the evaluators' shared CLI."""
