"""babysitter's orchestrator: study specs, search stages, tracking, reports, CLI, submission."""
