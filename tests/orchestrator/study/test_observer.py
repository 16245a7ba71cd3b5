from orchestrator.study.observer import Observers, StudyObserver


class Failing(StudyObserver):
    def __init__(self, *hooks: str) -> None:
        self.hooks = hooks

    def sanity_skipped(self) -> None:
        if "sanity_skipped" in self.hooks:
            raise OSError("disk")

    def observer_failed(self, observer: str, hook: str, error: Exception) -> None:
        if "observer_failed" in self.hooks:
            raise RuntimeError("cannot say so either")


class Listening(StudyObserver):
    def __init__(self) -> None:
        self.heard: list[tuple[str, str]] = []
        self.skipped = 0

    def sanity_skipped(self) -> None:
        self.skipped += 1

    def observer_failed(self, observer: str, hook: str, error: Exception) -> None:
        self.heard.append((observer, hook))


def test_an_observer_that_raises_while_told_of_another_is_detached_too_and_the_rest_hear_both():
    """The report failing, then MLflow failing as it hears so (seen in a study): each is said
    once, neither is called again, and the study's own call returns."""
    first, second = Failing("sanity_skipped"), Failing("observer_failed", "sanity_skipped")
    listening = Listening()
    observers = Observers([first, second, listening])
    observers.sanity_skipped()
    observers.sanity_skipped()
    assert observers.all == [listening] and listening.skipped == 2
    assert sorted(listening.heard) == [
        ("Failing", "observer_failed"),
        ("Failing", "sanity_skipped"),
    ]


def test_when_the_console_itself_fails_its_warning_still_reaches_stderr(capsys):
    class Console(Failing):
        speaks = True

    console, listening = Console("sanity_skipped"), Listening()
    observers = Observers([console, listening])
    observers.sanity_skipped()
    assert listening.heard == [("Console", "sanity_skipped")]
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning  Console stopped watching: OSError in sanity_skipped (disk); the study goes on, "
        "and the study folder keeps every record"
    ]
    Observers([Console("sanity_skipped"), Console()]).sanity_skipped()  # another still speaks
    assert capsys.readouterr().err == ""
