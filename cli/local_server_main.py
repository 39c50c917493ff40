"""The kept local Prefect server's process (cli.local_server starts it):
`prefect server start`, with every SQLite transaction of the server begun
IMMEDIATE.

Prefect begins them DEFERRED: a transaction that reads and then writes (creating
a task run reads the flow run's labels first) fails at once with SQLITE_BUSY when
another connection has written since its read (the events of the run just before,
recorded by the server's own services). busy_timeout does not apply to that case;
the server answers 503 and the client tries again after 2 s, then 4 s
(PrefectHQ/prefect#18934): one `gitops sync` in three stalled that way. Begun
IMMEDIATE, a transaction takes the write lock first, where busy_timeout waits
milliseconds for the other writer. One server, one user: writes are serialised
by SQLite anyway."""

from __future__ import annotations

import sys

from prefect.server.database import configurations


def _begin_immediate() -> None:
    begin_transaction = configurations.AioSqliteConfiguration.begin_transaction

    def immediate(self, session, with_for_update: bool = False):
        return begin_transaction(self, session, with_for_update=True)

    configurations.AioSqliteConfiguration.begin_transaction = immediate


if __name__ == "__main__":
    _begin_immediate()
    from prefect.cli import app

    sys.argv[0] = "prefect"
    app()
