"""The study's own MLflow store, a SQLite file in its folder: its URI, its artifact paths kept
right when the folder moves, and this process's connection to it dropped when it is set aside."""

from __future__ import annotations

import contextlib
from pathlib import Path


def embedded_uri(study: Path) -> str:
    return f"sqlite:///{(study / 'mlflow' / 'mlflow.db').resolve()}"


ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
)


def relocate(study: Path, experiment: str) -> str | None:
    """Point the study's own store at the artifacts where the folder is now. MLflow records
    absolute artifact URIs, so a copied or moved study would show the original's files, or
    none once it is gone; returns the old location when it moved. Done on the SQLite file
    before MLflow opens it."""
    import sqlite3

    store = study / "mlflow" / "mlflow.db"
    if not store.exists():
        return None
    here = (study / "mlflow" / "artifacts").resolve().as_uri()
    try:
        with contextlib.closing(sqlite3.connect(store)) as db, db:
            found = db.execute(
                "select artifact_location from experiments where name = ?", (experiment,)
            ).fetchone()
            old = found[0] if found else None
            if old is None or old == here:
                return None
            for table, column in ARTIFACT_COLUMNS:
                db.execute(
                    f"update {table} set {column} = ? || substr({column}, ?) "
                    f"where substr({column}, 1, ?) = ?",
                    (here, len(old) + 1, len(old), old),
                )
    except sqlite3.DatabaseError:  # damaged: opening it says so, in one line
        return None
    return old


def forget_store(uri: str) -> None:
    """Close this process's connections to the store at ``uri`` (MLflow keeps one engine per
    URI for the process's life), so a store set aside is not written through them."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)
    if engine is not None:
        engine.dispose()
