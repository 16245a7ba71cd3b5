"""Studies as Ray jobs, through a cluster's Jobs API (the head's dashboard port): the job is
plain `babysit run` with the babysitter installed on the cluster (its image, or a venv every
node shares). With Ray token authentication the SDK sends the token; babysitter never puts it
anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from trainables.errors import BabysitterError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
STUDY_KEY = "babysitter_study"
SPEC_FILE = "submitted-spec.yaml"
SUBMITTED = "submitted"  # the model files a job carries, in its study folder


def submitted_file(study_dir: str, name: str) -> str:
    return f"{study_dir}/{SUBMITTED}/{name}"


def token_available() -> bool:
    """Whether Ray can find a token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path or Path.home() / ".ray" / "auth_token").is_file()


def dashboard_address(address: str, allow_insecure: bool) -> str:
    """Check ``address`` (http(s)://HOST:PORT of the head's dashboard) before anything is sent:
    plain http to another machine without a token would let anyone there run code."""
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise BabysitterError(
            f"--address {address!r}: give the head's dashboard URL, e.g. http://10.0.0.5:8265"
        )
    if token_available():
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    elif parsed.scheme == "http" and parsed.hostname not in LOOPBACK and not allow_insecure:
        raise BabysitterError(
            f"--address {address}: plain http to another machine without a Ray token lets "
            "anyone on the network run code on that cluster; set RAY_AUTH_TOKEN (or "
            "RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) for a cluster started with "
            "RAY_AUTH_MODE=token, or pass --allow-insecure"
        )
    return address.rstrip("/")


@contextlib.contextmanager
def jobs_api(address: str) -> Iterator[Any]:
    """A Jobs API client whose failures end in one line naming the address."""
    import logging

    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    for name in ("ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield JobSubmissionClient(address)
    except AuthenticationError as exc:
        code = "401: no token sent" if "required" in str(exc) else "403: wrong token"
        raise BabysitterError(
            f"the Ray cluster at {address} refused the request ({code}); set RAY_AUTH_TOKEN, "
            "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token to the cluster's token"
        ) from None
    except (ConnectionError, requests.exceptions.ConnectionError) as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
        raise BabysitterError(
            f"no Ray dashboard answers at {address} ({reason}); check the head's address and "
            "dashboard port (8265 by default)"
        ) from None
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "RuntimeError"
        raise BabysitterError(f"the Ray cluster at {address}: {first}") from None


NO_AGENT = "No available agent to submit job"
AGENT_WAIT_S, AGENT_RETRY_S = 60.0, 2.0


def submit(
    client: Any,
    study: str,
    study_dir: str,
    run_args: list[str],
    spec_text: str | None,
    files: dict[str, str] | None = None,
) -> str:
    """Submit `babysit run STUDY RUN_ARGS`; returns the job id. A spec (``spec_text``) and the
    model files it names (``files``, text by name, named in the spec as
    ``STUDY_DIR/submitted/NAME``) travel in the job's environment and land in the study folder
    before the run.

    The code is not shipped as a working_dir: in Ray 2.60 a job driver's ray.init() can drop
    that directory from under the driver, taking its working directory with it."""
    words = [study, *run_args]
    env: dict[str, str] = {}
    writes = []
    if spec_text is not None:
        words[0] = f"{study_dir}/{SPEC_FILE}"
        env["BABYSITTER_SPEC"] = spec_text
        writes.append(("BABYSITTER_SPEC", words[0]))
    for number, (name, text) in enumerate(sorted((files or {}).items())):
        env[f"BABYSITTER_FILE_{number}"] = text
        writes.append((f"BABYSITTER_FILE_{number}", submitted_file(study_dir, name)))
    prelude = "".join(
        f"mkdir -p {shlex.quote(str(Path(path).parent))} && "
        f'printf "%s" "${variable}" > {shlex.quote(path)} && '
        for variable, path in writes
    )
    runtime_env: dict[str, Any] = {"env_vars": env} if env else {}
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(
                entrypoint=prelude + "python -m orchestrator run " + shlex.join(words),
                runtime_env=runtime_env,
                metadata={STUDY_KEY: study},
            )
        except RuntimeError as exc:  # a head just started: its job agent is not up yet
            if NO_AGENT not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(AGENT_RETRY_S)


def follow(client: Any, job_id: str, echo: Callable[[str], None]) -> None:
    """Print the job's log as it grows, until the job ends."""

    import logging

    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            echo(chunk.rstrip("\n"))

    asyncio.run(tail())
